"""The readback worker and its SGLang-free patch path on a real CUDA GPU (``pytest -m gpu``; skipped
without one). No stand-ins: torch.cuda streams and events, real device->host copies, under the CC
emulator where CC matters. Every host buffer is poisoned first and compared with a plain ``.cpu()``
of the same device tensor taken after a full synchronize, on fresh random data each time.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.timeout(60),
]


def _outputs(bs: int, gen: torch.Generator) -> list[torch.Tensor]:
    return [torch.randint(0, 50_000, (bs,), device="cuda", generator=gen, dtype=torch.int64),
            torch.randn(bs, device="cuda", generator=gen),
            torch.randn(bs, 5, device="cuda", generator=gen),
            torch.randint(0, 50_000, (bs, 5), device="cuda", generator=gen, dtype=torch.int64)]


@pytest.mark.parametrize("emulated", [False, True])
def test_worker_reads_what_the_forward_wrote_although_it_was_queued_first(emulated):
    from cc_runtime.emulator import cuda as emu
    from cc_runtime.readback import ReadbackWorker

    gen = torch.Generator(device="cuda").manual_seed(7)
    forward = torch.cuda.Stream()
    with (emu.emulate("h100") if emulated else contextlib.nullcontext()), ReadbackWorker("cuda") as worker:
        for step in range(20):
            with torch.cuda.stream(forward):
                fresh = _outputs(64, gen)
                src = [torch.full_like(f, -1) for f in fresh]  # poison: what a copy too early would read
                torch.cuda._sleep(2_000_000)  # the forward is still running when the copy is queued
                for s, f in zip(src, fresh, strict=True):
                    s.copy_(f)
                done = worker.submit_coalesced(src)
            done.synchronize()
            torch.cuda.synchronize()
            for host, ref in zip(done.result, fresh, strict=True):
                assert not host.is_cuda
                assert torch.equal(host, ref.cpu()), f"step {step}: a host view holds other bytes"


def test_sglang_free_coalescing_path_hands_back_the_same_bytes():
    """``sglang_readback.run_coalesced`` on real CUDA tensors, with no SGLang: the body's small ``.to("cpu")``
    copies come back as one crossing, byte-equal to separate copies, and ``copy_done`` covers them."""
    from cc_runtime.patches import sglang_readback

    gen = torch.Generator(device="cuda").manual_seed(11)
    for _ in range(10):
        outs = _outputs(32, gen)
        instance = SimpleNamespace(copy_done=torch.cuda.Event(blocking=True), hosts=None)

        def body(inst: SimpleNamespace, tensors: list[torch.Tensor] = outs) -> None:
            inst.hosts = [t.to("cpu", non_blocking=True) for t in tensors]
            inst.copy_done.record()

        sglang_readback.run_coalesced(body, instance, (instance,), {})
        instance.copy_done.synchronize()
        for host, dev in zip(instance.hosts, outs, strict=True):
            assert host.device.type == "cpu" and torch.equal(host, dev.cpu())


def test_sglang_worker_with_blocking_waits_reads_back_exactly():
    """SGLang 0.5.23's own worker, built with ``sglang.d2h_worker_blocking_waits`` (where the device kit
    carries its module): its blocking event and stream waits still cover the copy."""
    mod = pytest.importorskip("sglang.srt.managers.async_d2h_copy_worker")
    from cc_runtime.bench.readback_peer import build_worker

    gen = torch.Generator(device="cuda").manual_seed(3)
    worker = build_worker(mod, torch.cuda, blocking=True)
    try:
        for _ in range(10):
            outs = _outputs(16, gen)
            hosts: list[torch.Tensor] = []
            done = worker.submit(lambda o=outs, h=hosts: h.extend(t.to("cpu", non_blocking=True) for t in o))
            done.synchronize()
            torch.cuda.synchronize()
            assert all(torch.equal(h, d.cpu()) for h, d in zip(hosts, outs, strict=True))
    finally:
        worker.shutdown()
