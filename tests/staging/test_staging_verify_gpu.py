"""The stager and the deferred scope on a real GPU with poison on, read by real Triton kernels.

``CC_RUNTIME_STAGING_VERIFY=1`` fills every placeholder, staging slot and staged output with 0xA5
bytes when it is made, so a kernel that reads one before its copy landed sees wrong values.
``torch.cuda._sleep`` keeps a stream busy so copies really queue. CC is forced on in the stager
(``cc=True``) so it stages on a GPU without CC. Needs torch with CUDA and Triton (written for
torch 2.11 + Triton 3.6), not SGLang; runs from the source tree:
``python -m pytest tests/staging/test_staging_verify_gpu.py -m gpu``.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

torch = pytest.importorskip("torch")
triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from cc_runtime.staging import H2DStager  # noqa: E402
from cc_runtime.staging.deferred import deferred_h2d  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SLOW = 100_000_000  # cycles: ~50 ms on a ~2 GHz GPU


@triton.jit
def _copy_kernel(src, dst, n, BLOCK: tl.constexpr):  # noqa: N803 - Triton's constexpr style
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst + offs, tl.load(src + offs, mask=mask), mask=mask)


def triton_read(t):
    """What a kernel reads from ``t``: a Triton copy into a fresh buffer (the launcher takes data_ptr)."""
    out = torch.empty_like(t)
    n = t.numel()
    _copy_kernel[(triton.cdiv(max(n, 1), 256),)](t, out, n, BLOCK=256)
    return out


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setenv("CC_RUNTIME_STAGING_VERIFY", "1")


def _stager(**kw):
    return H2DStager("cuda", cc=True, pin_memory=True, **kw)


def _cuda(dev) -> bool:
    return torch.device(dev).type == "cuda"


def test_staged_views_read_in_any_order_by_triton_each_get_their_own_bytes():
    st = _stager()
    assert st.verify
    with torch.cuda.stream(st.stream):
        torch.cuda._sleep(SLOW)  # every copy below queues behind this
    consumer = torch.cuda.Stream()
    with torch.cuda.stream(consumer):
        staged = [st.stage([[k] * 2048, [k + 0.5] * 3], [torch.int64, torch.float32]) for k in range(6)]
        outs = {}
        for k in (3, 0, 5, 1, 4, 2):
            ids, vals = staged[k].views() if k % 2 else staged[k].tensors()
            outs[k] = (triton_read(ids), triton_read(vals))
            staged[k].release()
    consumer.synchronize()
    for k, (ids, vals) in outs.items():
        assert ids.eq(k).all().item() and vals.eq(k + 0.5).all().item(), f"stage {k} read other bytes"
    assert st.staged == 6 and st.passed_through == 0


def test_deferred_placeholders_read_by_a_triton_kernel_inside_the_scope():
    st = _stager()
    hosts = [torch.arange(1000, dtype=torch.int64), torch.full((7,), 2.5), torch.arange(5, dtype=torch.int32)]
    want = [h.clone() for h in hosts]
    torch.cuda._sleep(SLOW)  # the forward still running on the current stream
    with deferred_h2d(st, _cuda) as c:
        made = [hosts[0].to("cuda", non_blocking=True), torch.tensor(hosts[1].tolist(), device="cuda"),
                hosts[2].to("cuda")]
        for h in hosts:
            h.fill_(-7)  # the host tensors are reused at once: the device must not see this
        first = triton_read(made[0])  # the launcher's data_ptr() flushes
        assert c.flushes == 1
        late = torch.tensor([9, 9, 9], device="cuda")
        late_read = triton_read(late)
    torch.cuda.synchronize()
    assert torch.equal(first.cpu(), want[0]) and torch.equal(late_read.cpu(), torch.tensor([9, 9, 9]))
    for m, w in zip(made, want, strict=True):
        assert torch.equal(triton_read(m).cpu(), w)


@dataclasses.dataclass
class _Inputs:
    ids: object


def _c_op(cfg):
    """A custom op taking a structure; its body launches Triton with every torch hook off (as C would)."""
    from torch.overrides import handle_torch_function

    if torch._C._is_torch_function_mode_enabled():
        return handle_torch_function(_c_op, (cfg,), cfg)
    with torch._C.DisableTorchFunction():
        return triton_read(cfg["inputs"].ids)


def test_a_placeholder_nested_in_an_ops_arguments_is_filled_before_the_kernel():
    st = _stager()
    torch.cuda._sleep(SLOW)
    with deferred_h2d(st, _cuda):
        p = torch.arange(300, dtype=torch.int64).to("cuda")
        seen = _c_op({"inputs": _Inputs(ids=p)})
    torch.cuda.synchronize()
    assert torch.equal(seen.cpu(), torch.arange(300))


def test_a_triton_reader_on_another_thread_gets_filled_bytes():
    st = _stager()
    seen = []

    def reader(t):
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            out = triton_read(t)
        s.synchronize()
        seen.append(out.cpu())

    with deferred_h2d(st, _cuda):
        p = torch.arange(64, dtype=torch.int32).to("cuda")
        th = threading.Thread(target=reader, args=(p,))
        th.start()
        th.join(60)
        after = triton_read(p)  # the owner's stream waits for the other thread's fill
    torch.cuda.synchronize()
    assert torch.equal(seen[0], torch.arange(64, dtype=torch.int32))
    assert torch.equal(after.cpu(), torch.arange(64, dtype=torch.int32))


def test_graph_capture_start_flushes_so_the_captured_kernel_reads_filled_bytes():
    st = _stager()
    g = torch.cuda.CUDAGraph()
    with deferred_h2d(st, _cuda):
        p = torch.arange(128, dtype=torch.int64).to("cuda")
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            triton_read(torch.zeros(1, device="cuda"))  # compile outside capture
            with torch.cuda.graph(g, stream=s):
                out = triton_read(p)
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out.cpu(), torch.arange(128))


def test_stream_synchronisation_flushes_before_a_raw_pointer_reader():
    st = _stager()
    with deferred_h2d(st, _cuda) as c:
        p = torch.arange(16, dtype=torch.int64).to("cuda")
        torch.cuda.current_stream().synchronize()
        assert c.flushes == 1
        with torch._C.DisableTorchFunction():  # a C reader holding the pointer: no hook at all
            seen = p.cpu()
    assert torch.equal(seen, torch.arange(16))
