"""The SGLang readback patches against the REAL SGLang code (0.5.12 or 0.5.23, per nox session).

Runs only in the nox ``upstream-*`` sessions (``CC_RUNTIME_TEST_SGLANG`` names the version); skips
cleanly elsewhere. Everything SGLang is real: ``Scheduler.init_overlap`` / ``event_loop_overlap`` /
``_copy_result_to_cpu`` / ``launch_batch_sample_if_needed``, ``GenerationBatchResult.copy_to_cpu``,
``LogitsProcessorOutput``, 0.5.23's ``AsyncD2HCopyWorker``. Stand-ins, only for what cannot exist on a
CPU-only machine: ``torch.cuda`` (streams, events, devices) is replaced by :class:`CudaStandIn`, a thin
shell over the emulator's simulated device (real threads, in-order streams, CC's host-synchronous
copies); "device" tensors are CPU tensors that device has registered as resident. The scheduler object
is built with ``object.__new__`` and given only the attributes those methods read (a real one needs a
model); its batch source and output processor are stubs that follow upstream's contract
(``copy_done.synchronize()`` before reading results).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import cc_runtime  # noqa: E402
from cc_runtime import runtime  # noqa: E402
from cc_runtime.patching import installed_version  # noqa: E402

pytestmark = [pytest.mark.upstream, pytest.mark.timeout(300)]

PATCH_FOR = {"0.5.12": "sglang.readback_worker", "0.5.23": "sglang.readback_coalesce"}


class _StreamCtx:
    """Reusable, like torch.cuda.StreamContext (SGLang enters forward_stream_ctx every step)."""

    def __init__(self, sim: Any, stream: Any) -> None:
        self.sim, self.stream = sim, stream
        self._prev: list[Any] = []

    def __enter__(self) -> Any:
        self._prev.append(getattr(self.sim._local, "stream", None))
        self.sim._local.stream = self.stream
        return self.stream

    def __exit__(self, *exc: Any) -> None:
        self.sim._local.stream = self._prev.pop()


class CudaStandIn:
    """Stands in for ``torch.cuda`` on CPU: the emulator's SimDevice plus the few calls it lacks."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.set_device_calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sim, name)

    def stream(self, s: Any) -> _StreamCtx:
        return _StreamCtx(self.sim, s)

    def set_device(self, device: int) -> None:
        self.set_device_calls.append(device)

    def current_device(self) -> int:
        return 0


@pytest.fixture
def sglang_version() -> str:
    wanted = os.environ.get("CC_RUNTIME_TEST_SGLANG")
    if not wanted:
        pytest.skip("not in an upstream-* nox session (CC_RUNTIME_TEST_SGLANG unset)")
    pytest.importorskip("sglang")
    got = installed_version("sglang")
    assert got == wanted, f"session promised SGLang {wanted}, found {got}"
    if got not in PATCH_FOR:
        pytest.skip(f"no readback test recipe for SGLang {got}")
    return got


@pytest.fixture
def sg(sglang_version: str) -> SimpleNamespace:
    from sglang.srt.layers.logits_processor import LogitsProcessorOutput
    from sglang.srt.managers import scheduler, utils

    return SimpleNamespace(version=sglang_version, scheduler=scheduler, utils=utils,
                           Scheduler=scheduler.Scheduler, GBR=utils.GenerationBatchResult,
                           LPO=LogitsProcessorOutput)


@pytest.fixture
def cuda(sg: SimpleNamespace) -> Any:
    from cc_runtime.emulator import SimDevice

    sim = SimDevice("h100", name="cuda-standin")
    yield CudaStandIn(sim)
    sim.shutdown(timeout=5)


@pytest.fixture
def patched(sg: SimpleNamespace) -> Any:
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1")
    rec = runtime.manager().records[PATCH_FOR[sg.version]]
    assert rec.status == "applied", (rec.status, rec.reason)
    yield rec
    runtime._reset_for_tests()


def _device(cuda: CudaStandIn, t: torch.Tensor) -> torch.Tensor:
    return cuda.sim.mark_device(t)


def _lpo(sg: SimpleNamespace, **values: Any) -> Any:
    names = {f.name for f in dataclasses.fields(sg.LPO)}
    return sg.LPO(**{k: v for k, v in values.items() if k in names})


def make_result(sg: SimpleNamespace, cuda: CudaStandIn, bs: int, step: int, hidden: bool = False) -> Any:
    """A real GenerationBatchResult holding device tensors, as the sampler leaves it."""
    g = torch.Generator().manual_seed(step)
    d = lambda t: _device(cuda, t)  # noqa: E731
    lo = _lpo(
        sg,
        next_token_logits=d(torch.randn(bs, 32, generator=g)),
        next_token_logprobs=d(torch.randn(bs, generator=g)),
        input_token_logprobs=d(torch.randn(3 * bs, generator=g)),
        next_token_top_logprobs_val=[d(torch.randn(5, generator=g)) for _ in range(bs)],
        next_token_top_logprobs_idx=[d(torch.randint(0, 1000, (5,), generator=g)) for _ in range(bs)],
        next_token_token_ids_logprobs_val=[d(torch.randn(2, generator=g)), None] * (bs // 2),
        hidden_states=d(torch.randn(bs, 16, generator=g)) if hidden else None,
    )
    return sg.GBR(logits_output=lo, next_token_ids=d(torch.full((bs,), step, dtype=torch.int64)))


def _host_view(result: Any) -> dict[str, Any]:
    lo = result.logits_output
    out = {"next_token_ids": result.next_token_ids}
    for name in ("next_token_logprobs", "input_token_logprobs", "next_token_top_logprobs_val",
                 "next_token_top_logprobs_idx", "next_token_token_ids_logprobs_val", "hidden_states"):
        out[name] = getattr(lo, name)
    return out


def _stub_scheduler(sg: SimpleNamespace, cuda: CudaStandIn, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Scheduler whose init_overlap (the real one) runs against the CUDA stand-in."""
    monkeypatch.setattr(torch, "get_device_module", lambda *a, **k: cuda)
    s = object.__new__(sg.Scheduler)
    s.device = "cpu"
    s.forward_stream = cuda.Stream(name="forward")
    s.schedule_stream = cuda.default_stream
    s.enable_overlap = True
    if sg.version == "0.5.12":
        s.max_running_requests, s.chunked_prefill_size = 8, 64
        s.model_config = SimpleNamespace(context_len=128)
        from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

        s.spec_algorithm = SpeculativeAlgorithm.NONE
        s.init_overlap()  # the real method, wrapped by the patch
    else:
        # 0.5.23's init_overlap builds a FutureMap from the model runner's attention backends; its
        # stream/worker part is what matters here, so reproduce exactly that part of it.
        from sglang.srt.managers.async_d2h_copy_worker import AsyncD2HCopyWorker

        s.device_module = cuda
        s.forward_stream_ctx = cuda.stream(s.forward_stream)
        s.copy_stream = cuda.Stream(name="copy")
        s.copy_stream_ctx = cuda.stream(s.copy_stream)
        s.enable_async_d2h_copy = True
        s.async_d2h_worker = AsyncD2HCopyWorker(cuda)
        from cc_runtime.patches import sglang_readback

        sglang_readback._bind_scheduler(s, start_worker=False)  # what the init_overlap wrapper does
    return s


def _read_back(sg: SimpleNamespace, s: Any, result: Any, hidden: bool = False) -> None:
    """Exactly what each version's run_batch does after the forward, in the overlap branch."""
    batch = SimpleNamespace(return_logprob=True, return_hidden_states=hidden,
                            spec_algorithm=SimpleNamespace(is_dspark=lambda: False))
    with s.forward_stream_ctx:
        result.copy_done = s.device_module.Event()
        if sg.version == "0.5.12":
            result.copy_to_cpu(return_logprob=batch.return_logprob, return_hidden_states=hidden)
    if sg.version != "0.5.12":
        s._copy_result_to_cpu(result, batch)


def _unpatched_copy(sg: SimpleNamespace, result: Any, cuda: CudaStandIn) -> None:
    result.copy_done = cuda.Event()
    result.copy_to_cpu(return_logprob=True, return_hidden_states=True)
    result.copy_done.synchronize()


@pytest.mark.parametrize("bs", [1, 8])
def test_patched_readback_returns_identical_host_tensors(sg, cuda, monkeypatch, bs):
    reference = make_result(sg, cuda, bs, step=3)
    _unpatched_copy(sg, reference, cuda)  # upstream code, unpatched
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1")
    try:
        s = _stub_scheduler(sg, cuda, monkeypatch)
        result = make_result(sg, cuda, bs, step=3)
        before = cuda.sim.stats["copies_d2h"]
        _read_back(sg, s, result)
        result.copy_done.synchronize()  # the consumer contract, unchanged
        assert cuda.sim.stats["copies_d2h"] - before == 1, "one crossing for the whole step"
        want, got = _host_view(reference), _host_view(result)
        for name in want:
            if name == "hidden_states":
                continue
            _assert_same_values(want[name], got[name], name)
    finally:
        runtime._reset_for_tests()


def _assert_same_values(want: Any, got: Any, name: str) -> None:
    if isinstance(want, list):
        assert isinstance(got, list) and len(want) == len(got), name
        for w, g in zip(want, got, strict=True):
            _assert_same_values(w, g, name)
    elif isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), name
        assert (got.dtype, tuple(got.shape)) == (want.dtype, tuple(want.shape)), name
        assert torch.equal(got, want), name
    else:
        assert got == want, name


def test_worker_path_does_not_block_behind_the_forward_and_keeps_copy_done_contract(
        sg, cuda, monkeypatch, patched):
    s = _stub_scheduler(sg, cuda, monkeypatch)
    result = make_result(sg, cuda, 4, step=0)
    gate = threading.Event()
    with s.forward_stream_ctx:  # the forward pass that writes this step's token ids, still running
        cuda.sim.launch(lambda: (gate.wait(30), result.next_token_ids.fill_(41)), 0.0)
    try:
        _read_back(sg, s, result)  # must return although the forward has not finished
        assert type(result.copy_done).__name__ in ("CopyDone", "HostCopyDone")  # host-side done-object
        assert not result.copy_done.query()
    finally:
        gate.set()
    result.copy_done.synchronize()
    assert result.next_token_ids.tolist() == [41] * 4
    assert not cuda.sim.is_device(result.next_token_ids)


def test_hidden_states_stay_inline_and_are_correct(sg, cuda, monkeypatch, patched):
    # The readback patch alone; with sglang.readback_snapshot* they go to the worker
    # (test_readback_snapshot_upstream.py).
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1", patches=PATCH_FOR[sg.version], propagate=False)
    s = _stub_scheduler(sg, cuda, monkeypatch)
    result = make_result(sg, cuda, 4, step=5, hidden=True)
    want_hidden = result.logits_output.hidden_states.clone()
    _read_back(sg, s, result, hidden=True)
    assert isinstance(result.copy_done, type(cuda.Event())), "hidden states must not go to a worker"
    result.copy_done.synchronize()
    assert torch.equal(result.logits_output.hidden_states, want_hidden)
    assert result.next_token_ids.tolist() == [5] * 4


def test_failed_copy_surfaces_in_copy_done_synchronize(sg, cuda, monkeypatch, patched):
    s = _stub_scheduler(sg, cuda, monkeypatch)
    result = make_result(sg, cuda, 2, step=1)

    def broken_copy(*args: Any, **kwargs: Any) -> None:  # stands in for a failing cudaMemcpy
        raise RuntimeError("uncorrectable ECC error")

    cuda.copy_ = broken_copy
    _read_back(sg, s, result)
    with pytest.raises(RuntimeError) as info:
        result.copy_done.synchronize()
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__
    assert any("uncorrectable ECC error" in c for c in chain)


def test_real_overlap_loop_processes_every_step_in_order(sg, cuda, monkeypatch, patched):
    """Drive the real ``Scheduler.event_loop_overlap`` for N steps with the patch active."""
    s = _stub_scheduler(sg, cuda, monkeypatch)
    n, bs = 12, 4
    processed: list[list[int]] = []
    steps = iter(range(n))

    class Batch:
        def __init__(self, step: int) -> None:
            self.step = step
            self.return_logprob, self.return_hidden_states = True, False
            self.forward_mode = SimpleNamespace(is_extend=lambda: False)
            self.spec_algorithm = SimpleNamespace(is_dspark=lambda: False, is_none=lambda: True)

        def copy(self) -> Batch:
            return self

    class Stop(Exception):
        pass

    def next_batch(*args: Any, **kwargs: Any) -> Any:
        step = next(steps, None)
        if step is None:
            # drain: one idle iteration processes the last result, then stop
            if getattr(s, "_drained", False):
                raise Stop
            s._drained = True
            batch = None
        else:
            batch = Batch(step)
        s.cur_batch = batch
        if sg.version == "0.5.12":
            return batch
        return SimpleNamespace(running_batch=None, batch_to_run=batch)

    def run_batch(batch: Batch) -> Any:
        result = make_result(sg, cuda, bs, step=-1)
        with s.forward_stream_ctx:  # the forward writes this step's tokens a little later
            cuda.sim.launch(lambda r=result, st=batch.step: r.next_token_ids.fill_(st), 0.002)
        _read_back(sg, s, result)
        return result

    def process_batch_result(batch: Batch, result: Any) -> None:
        result.copy_done.synchronize()  # what the real output processor does first
        processed.append(result.next_token_ids.tolist())

    common = dict(recv_requests=lambda: [], process_input_requests=lambda reqs: None, _engine_paused=False,
                  get_next_batch_to_run=next_batch, run_batch=run_batch,
                  process_batch_result=process_batch_result, is_disable_overlap_for_batch=lambda *a, **k: False,
                  on_idle=lambda: None, is_generation=True, last_batch=None)
    extra = dict(gracefully_exit=False, ingest_requests=lambda: None, running_batch=None,
                 _apply_war_barrier=lambda: None, _sched_idled=False) if sg.version != "0.5.12" else {}
    for k, v in {**common, **extra}.items():
        setattr(s, k, v)
    with pytest.raises(Stop):
        sg.Scheduler.event_loop_overlap(s)
    assert processed == [[i] * bs for i in range(n)]


def test_deactivate_restores_every_patched_object_and_stops_the_worker(sg, cuda, monkeypatch):
    from cc_runtime.patches import sglang_readback

    originals = (sg.GBR.__dict__["copy_to_cpu"], sg.Scheduler.__dict__["init_overlap"],
                 getattr(sg.utils, "_async_d2h", None))
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1")
    try:
        assert sg.GBR.__dict__["copy_to_cpu"] is not originals[0]
        assert sg.Scheduler.__dict__["init_overlap"] is not originals[1]
        s = _stub_scheduler(sg, cuda, monkeypatch)
        worker = sglang_readback.STATE.worker
        assert (worker is not None) == (sg.version == "0.5.12")
        assert getattr(s, "cc_runtime_readback_worker", None) is worker
    finally:
        runtime.deactivate()
    assert (sg.GBR.__dict__["copy_to_cpu"], sg.Scheduler.__dict__["init_overlap"],
            getattr(sg.utils, "_async_d2h", None)) == originals
    assert sglang_readback.STATE.worker is None and sglang_readback.STATE.backend is None
    if worker is not None:
        assert worker.closed
    runtime._reset_for_tests()


def test_refused_pinned_memory_falls_back_to_pageable_with_one_crossing(sg, cuda, monkeypatch, patched):
    """Under CC pinning host memory can fail (cudaHostRegister error 801); the coalesced readback must
    then use pageable memory: same values as upstream, still one crossing, error not surfaced.

    Stand-in, and why: a CUDA tensor cannot exist on this CPU-only machine, so the patch is told the
    sources are CUDA tensors (``_pins_host_memory``); the refusal itself is real: this machine's torch
    raises RuntimeError for ``pin_memory=True`` (no driver), as pinning under CC can. SGLang 0.5.12
    reads back with ``.to("cpu", non_blocking=True)``, so it asks for pinned memory and must fall back;
    0.5.23 reads through ``async_d2h`` (deferred as a blocking copy), so it never asks.
    """
    from cc_runtime.patches import sglang_readback
    from cc_runtime.readback import coalesce

    reference = make_result(sg, cuda, 4, step=7)
    runtime._reset_for_tests()
    _unpatched_copy(sg, reference, cuda)
    cc_runtime.activate(cc="1")
    assert runtime.manager().records[PATCH_FOR[sg.version]].status == "applied"
    pins: list[bool] = []
    real_read = coalesce.read_coalesced

    def recording_read(*args: Any, **kwargs: Any) -> Any:
        pins.append(bool(kwargs.get("pin_memory")))
        return real_read(*args, **kwargs)

    monkeypatch.setattr(coalesce, "read_coalesced", recording_read)
    monkeypatch.setattr(sglang_readback, "_pins_host_memory", lambda src: True)
    with pytest.raises(RuntimeError):
        torch.empty(8, dtype=torch.uint8, pin_memory=True)  # the refusal the fallback must absorb
    s = _stub_scheduler(sg, cuda, monkeypatch)
    result = make_result(sg, cuda, 4, step=7)
    before = cuda.sim.stats["copies_d2h"]
    _read_back(sg, s, result)
    result.copy_done.synchronize()
    assert cuda.sim.stats["copies_d2h"] - before == 1, "still one crossing"
    assert pins == ([True, False] if sg.version == "0.5.12" else [False]), pins
    want, got = _host_view(reference), _host_view(result)
    for name in want:
        if name != "hidden_states":
            _assert_same_values(want[name], got[name], name)
    assert not result.next_token_ids.is_pinned()
