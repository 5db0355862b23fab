# ruff: noqa: F811 - pytest fixtures imported from test_readback_sglang_upstream and used as arguments
"""Snapshot readback (``sglang.readback_snapshot*``) against the REAL SGLang code (0.5.12 or 0.5.23).

Same set-up and stand-ins as test_readback_sglang_upstream.py (whose helpers this reuses): the real
``Scheduler.init_overlap`` / ``_copy_result_to_cpu``, ``GenerationBatchResult.copy_to_cpu``,
``LogitsProcessorOutput``, 0.5.12's ``TopkCaptureOutput``, 0.5.23's ``AsyncD2HCopyWorker``; ``torch.cuda``
is the CPU stand-in over the emulator's simulated device (CC costs and host-synchronous copies), and a
"CUDA-graph output buffer" is a device tensor that a later simulated replay rewrites in place.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
from test_readback_sglang_upstream import (  # noqa: F401 - fixtures
    CudaStandIn,
    _assert_same_values,
    _host_view,
    _stub_scheduler,
    _unpatched_copy,
    cuda,
    make_result,
    sg,
    sglang_version,
)

torch = pytest.importorskip("torch")

import cc_runtime  # noqa: E402
from cc_runtime import runtime  # noqa: E402

pytestmark = [pytest.mark.upstream, pytest.mark.timeout(300)]

SNAPSHOT_FOR = {"0.5.12": "sglang.readback_snapshot_worker", "0.5.23": "sglang.readback_snapshot"}


@pytest.fixture
def all_patches(sg: SimpleNamespace) -> Any:
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1", propagate=False)
    rec = runtime.manager().records[SNAPSHOT_FOR[sg.version]]
    assert rec.status == "applied", (rec.status, rec.reason)
    yield rec
    runtime._reset_for_tests()


def _speculative(sg: SimpleNamespace, cuda: CudaStandIn, result: Any, step: int) -> Any:
    """Add what a speculative step carries: accept lengths (+ DSpark's / a capture on each version)."""
    d = cuda.sim.mark_device
    g = torch.Generator().manual_seed(100 + step)
    result.accept_lens = d(torch.randint(1, 5, (result.next_token_ids.numel(),), generator=g, dtype=torch.int32))
    if sg.version == "0.5.12":
        from sglang.srt.state_capturer.base import TopkCaptureOutput

        result.next_draft_input = object()  # relayed to the next forward on the device, never read back
        result.routed_experts_output = TopkCaptureOutput(
            out_cache_loc=d(torch.arange(6, dtype=torch.int64)),
            topk=d(torch.randint(0, 64, (6, 2, 4), generator=g, dtype=torch.int32)), host_cache=None)
    else:
        result.block_accept_lens = d(torch.randint(1, 5, (2,), generator=g, dtype=torch.int32))
    return result


def _spec_view(result: Any) -> dict[str, Any]:
    out = _host_view(result)
    for name in ("accept_lens", "block_accept_lens"):
        if getattr(result, name, None) is not None:
            out[name] = getattr(result, name)
    capture = getattr(result, "routed_experts_output", None)
    if capture is not None:
        out["capture"] = [capture.out_cache_loc, capture.topk]
    return out


def _read_back(sg: SimpleNamespace, s: Any, result: Any, *, hidden: bool, dspark: bool = False) -> None:
    """What each version's run_batch does after the forward, in the overlap branch."""
    batch = SimpleNamespace(return_logprob=True, return_hidden_states=hidden,
                            spec_algorithm=SimpleNamespace(is_dspark=lambda: dspark))
    with s.forward_stream_ctx:
        result.copy_done = s.device_module.Event()
        if sg.version == "0.5.12":
            result.copy_to_cpu(return_logprob=True, return_hidden_states=hidden)
    if sg.version != "0.5.12":
        s._copy_result_to_cpu(result, batch)


def _is_host_done(done: Any) -> bool:
    return type(done).__name__ in ("CopyDone", "HostCopyDone")


@pytest.mark.parametrize("kind", ["hidden", "speculative"])
def test_host_results_equal_upstreams_and_go_to_the_worker(sg, cuda, monkeypatch, kind):
    spec = kind == "speculative"
    reference = make_result(sg, cuda, 4, step=3, hidden=not spec)
    if spec:
        _speculative(sg, cuda, reference, 3)
    _unpatched_copy(sg, reference, cuda)  # upstream code, unpatched
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1", propagate=False)
    try:
        s = _stub_scheduler(sg, cuda, monkeypatch)
        result = make_result(sg, cuda, 4, step=3, hidden=not spec)
        if spec:
            _speculative(sg, cuda, result, 3)
        _read_back(sg, s, result, hidden=not spec, dspark=spec)
        assert _is_host_done(result.copy_done), "the snapshot must let the worker read it"
        result.copy_done.synchronize()
        want, got = _spec_view(reference), _spec_view(result)
        assert set(want) == set(got)
        for name in want:
            _assert_same_values(want[name], got[name], name)
        for t in (result.logits_output.hidden_states, getattr(result, "accept_lens", None)):
            assert t is None or not cuda.sim.is_device(t), "results must be host tensors"
    finally:
        runtime._reset_for_tests()


def test_a_replay_after_the_snapshot_cannot_change_the_results(sg, cuda, monkeypatch, all_patches):
    from cc_runtime.patches import sglang_readback

    s = _stub_scheduler(sg, cuda, monkeypatch)
    result = _speculative(sg, cuda, make_result(sg, cuda, 4, step=1, hidden=True), 1)
    graph_hidden = result.logits_output.hidden_states  # the graph's static output buffers
    graph_accept, graph_tokens = result.accept_lens, result.next_token_ids
    first_hidden = torch.full_like(graph_hidden, 1.5)
    first_accept = torch.full_like(graph_accept, 3)
    first_tokens = torch.arange(graph_tokens.numel(), dtype=graph_tokens.dtype)
    with s.forward_stream_ctx:  # forward N writes its outputs into the graph buffers
        cuda.sim.launch(lambda: (graph_hidden.copy_(first_hidden), graph_accept.copy_(first_accept),
                                 graph_tokens.copy_(first_tokens)), 0.001)

    # Hold the readback worker, so its copy can only run after the next replay.
    gate = threading.Event()
    worker = sglang_readback.STATE.worker if sg.version == "0.5.12" else s.async_d2h_worker
    worker.submit(lambda: gate.wait(30))  # both workers run their items in order
    try:
        _read_back(sg, s, result, hidden=True, dspark=True)
        assert _is_host_done(result.copy_done)
        with s.forward_stream_ctx:  # replay N+1 rewrites the same buffers
            cuda.sim.launch(lambda: (graph_hidden.fill_(-7.0), graph_accept.fill_(0), graph_tokens.fill_(-1)),
                            0.001)
        s.forward_stream.synchronize()
        assert graph_hidden.eq(-7.0).all()  # the replay has happened
    finally:
        gate.set()
    result.copy_done.synchronize()
    assert torch.equal(result.logits_output.hidden_states, first_hidden)
    assert torch.equal(result.accept_lens, first_accept)
    assert torch.equal(result.next_token_ids, first_tokens)


def test_without_a_bound_forward_stream_results_stay_inline(sg, cuda, monkeypatch, all_patches):
    if sg.version != "0.5.12":
        pytest.skip("0.5.23 takes the forward stream from the scheduler it wraps")
    from cc_runtime.patches import sglang_readback_snapshot as snap

    s = _stub_scheduler(sg, cuda, monkeypatch)
    snap.STATE.forward_stream = None
    result = make_result(sg, cuda, 2, step=2, hidden=True)
    want = result.logits_output.hidden_states.clone()
    _read_back(sg, s, result, hidden=True)
    assert not _is_host_done(result.copy_done)  # upstream's inline copy, as before
    result.copy_done.synchronize()
    assert torch.equal(result.logits_output.hidden_states, want)


def test_capture_holders_are_snapshotted_through_their_own_device_tensor_list(sg, cuda, monkeypatch):
    """The 0.5.13 - 0.5.22 path for holders that name their device tensors (``map_device_tensors``):
    the real 0.5.23 classes have that method; 0.5.12's (plain dataclasses) are covered above."""
    if sg.version == "0.5.12":
        pytest.skip("0.5.12's capture holders have no map_device_tensors")
    from sglang.srt.eplb.expert_distribution import ExpertDistributionMetrics
    from sglang.srt.state_capturer.base import TopkCaptureOutput

    from cc_runtime.patches import sglang_readback
    from cc_runtime.patches import sglang_readback_snapshot as snap
    from cc_runtime.readback.backend import SimDeviceBackend

    d = cuda.sim.mark_device
    capture = TopkCaptureOutput(out_cache_loc=d(torch.arange(6)), topk=d(torch.ones(6, 2, dtype=torch.int32)),
                                host_cache=None)
    metrics = ExpertDistributionMetrics(forward_pass_id=1, eplb_balancedness=d(torch.tensor([0.5])),
                                        gpu_physical_count_sum=None, reset_server_log_history=False)
    result = SimpleNamespace(logits_output=None, routed_experts_output=capture, indexer_topk_output=None,
                             expert_distribution_metrics=metrics)
    originals = [capture.out_cache_loc, capture.topk, metrics.eplb_balancedness]
    monkeypatch.setattr(sglang_readback.STATE, "backend", SimDeviceBackend(cuda.sim))
    stream = cuda.sim.Stream(name="forward")
    with cuda.sim.stream(stream):
        assert snap.snapshot(result, hidden=False, holders=True) == 3
    stream.synchronize()
    now = [capture.out_cache_loc, capture.topk, metrics.eplb_balancedness]
    for before, after in zip(originals, now, strict=True):
        assert after is not before and cuda.sim.is_device(after) and torch.equal(after, before)
    for t in originals:
        t.zero_()  # the next replay rewrites the capture buffers
    assert now[1].eq(1).all() and now[2].item() == 0.5 and now[0].tolist() == list(range(6))
    assert metrics.gpu_physical_count_sum is None
