"""Triton and torch inductor timer patches against the REAL installed modules (triton 3.6 in nox
``tests``; triton 3.8 + torch 2.14.1 in the upstream venvs; torch 2.13 in .venv-dev).

Stand-ins, and why: there is no GPU, so the CC-safe timer is pinned (``use_timer``) to a
``FakeTimer`` whose clock stands in for %globaltimer, and "kernels" are functions that advance that
clock. Nothing of Triton or inductor is stubbed: their own benchmarker code runs on top of the patch.
"""

from __future__ import annotations

import logging
import math
import sys

import pytest

import cc_runtime
from cc_runtime import runtime
from cc_runtime.timer import FakeClock, FakeTimer, StampEvent, use_timer
from cc_runtime.timer import do_bench as cc_do_bench


@pytest.fixture
def cc_on():
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1")
    yield runtime.manager()
    runtime._reset_for_tests()


def _status(mgr, name):
    return mgr.records[name].status, mgr.records[name].reason


# -- Triton -----------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_triton_patch_installs_and_reverts_exactly():
    testing = pytest.importorskip("triton.testing")
    from triton.backends.nvidia.driver import CudaDriver

    original_bench, original_graph = testing.do_bench, testing.do_bench_cudagraph
    original_getter = CudaDriver.__dict__["get_benchmarker"]
    runtime._reset_for_tests()
    mgr = runtime.manager()
    cc_runtime.activate(cc="1")
    assert _status(mgr, "triton.autotune_timer")[0] == "applied", _status(mgr, "triton.autotune_timer")
    assert testing.do_bench is cc_do_bench
    assert CudaDriver.get_benchmarker(object()) is cc_do_bench
    assert testing.do_bench_cudagraph is not original_graph
    runtime.deactivate()
    assert testing.do_bench is original_bench and testing.do_bench_cudagraph is original_graph
    assert CudaDriver.__dict__["get_benchmarker"] is original_getter


@pytest.mark.timeout(120)
def test_triton_patch_is_disabled_without_cc():
    testing = pytest.importorskip("triton.testing")
    original = testing.do_bench
    runtime._reset_for_tests()
    cc_runtime.activate(cc="0")
    assert runtime.manager().records["triton.autotune_timer"].status == "disabled"
    assert testing.do_bench is original


@pytest.mark.timeout(180)
def test_already_tuned_autotuners_are_switched_or_reported(caplog):
    """Real @triton.autotune objects; "already benchmarked" = the cached_property value set as Triton
    would set it (it cannot be computed on CPU: the driver needs a GPU)."""
    triton = pytest.importorskip("triton")
    import triton.language as tl
    import triton.testing as testing

    @triton.jit
    def _k(x_ptr, BLOCK: tl.constexpr):
        tl.store(x_ptr + tl.arange(0, BLOCK), 0)

    cfgs = [triton.Config({"BLOCK": 16})]
    plain = triton.autotune(configs=cfgs, key=[])(_k)
    custom = triton.autotune(configs=cfgs, key=[], do_bench=lambda fn, quantiles: [1.0, 1.0, 1.0])(_k)
    fresh = triton.autotune(configs=cfgs, key=[])(_k)
    original = testing.do_bench
    plain.__dict__["do_bench"] = original  # what Autotuner.do_bench caches from the driver
    _ = custom.do_bench  # caches the custom lambda
    mod = sys.modules[__name__]  # module globals, where @triton.autotune leaves kernels
    mod._plain_tuner, mod._custom_tuner, mod._fresh_tuner = plain, custom, fresh
    try:
        runtime._reset_for_tests()
        with caplog.at_level(logging.WARNING, logger="cc_runtime"):
            cc_runtime.activate(cc="1")
        assert plain.__dict__["do_bench"] is cc_do_bench
        assert "do_bench" not in fresh.__dict__  # untouched: it will ask the patched driver
        assert any("custom benchmarker" in r.getMessage() and "_k" in r.getMessage() for r in caplog.records)
        clock = FakeClock()
        with use_timer(FakeTimer(clock, stamp_cost_ns=800)):
            got = plain.do_bench(clock.work(0.3), quantiles=(0.5, 0.2, 0.8))  # the Autotuner's own call
        assert got == [pytest.approx(0.3, abs=1e-4)] * 3
        from triton.backends.nvidia.driver import CudaDriver

        # what its first tuning caches now (Autotuner.do_bench asks the driver; no driver object on CPU)
        fresh.__dict__["do_bench"] = CudaDriver.get_benchmarker(object())
        assert fresh.__dict__["do_bench"] is cc_do_bench
        runtime.deactivate()
        assert plain.__dict__["do_bench"] is original
        assert "do_bench" not in fresh.__dict__  # forgotten: asks the restored driver again
        assert custom.__dict__["do_bench"] is not cc_do_bench
    finally:
        for name in ("_plain_tuner", "_custom_tuner", "_fresh_tuner"):
            mod.__dict__.pop(name, None)


# -- torch inductor ---------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_inductor_patch_installs_and_reverts_exactly():
    b = pytest.importorskip("torch._inductor.runtime.benchmarking")
    IB, TB = b.InductorBenchmarker, b.TritonBenchmarker
    before = {a: IB.__dict__[a] for a in ("get_event_pairs", "get_event_pairs_min_timing")}
    before_tdb = TB.__dict__["triton_do_bench"]
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1")
    rec = runtime.manager().records["inductor.benchmarker_timer"]
    assert rec.status == "applied", rec.reason
    assert IB.__dict__["get_event_pairs"] is not before["get_event_pairs"]
    assert isinstance(TB.__dict__["triton_do_bench"], property)
    runtime.deactivate()
    assert {a: IB.__dict__[a] for a in before} == before
    assert TB.__dict__["triton_do_bench"] is before_tdb


@pytest.mark.timeout(180)
def test_inductor_event_pairs_are_globaltimer_stamps_and_bad_readings_lose(cc_on):
    b = pytest.importorskip("torch._inductor.runtime.benchmarking")
    bench = b.InductorBenchmarker()
    clock = FakeClock()
    with use_timer(FakeTimer(clock, stamp_cost_ns=1000)):
        pairs = bench.get_event_pairs(4)  # torch <= 2.12 form
        pairs2 = bench.get_event_pairs(2, device_type="cuda")  # torch 2.13/2.14 form
        assert all(isinstance(e, StampEvent) for p in pairs + pairs2 for e in p)
        for i, (s, e) in enumerate(pairs):
            s.record()
            clock.advance(50_000 + 10_000 * i)
            e.record()
        # the stamp's own 1 us is removed: 0.050 ms, not 0.051
        assert bench.get_event_pairs_min_timing(pairs) == pytest.approx(0.050, abs=1e-4)
    readings = iter([-3.0, 0.2, math.nan, 0.1])
    corrupted = FakeTimer(FakeClock(), corrupt=lambda ms: next(readings))
    with use_timer(corrupted):
        pairs = bench.get_event_pairs(4)
        for s, e in pairs:
            s.record()
            e.record()
        assert bench.get_event_pairs_min_timing(pairs) == 0.1  # the original would return -3.0


def test_min_timing_keeps_the_order_of_candidates_around_the_stamp_cost():
    """The stamp cost comes off every candidate alike: one reading just below it must not come out
    slower than one just above it (before, only readings above it were corrected)."""
    from cc_runtime.patches.inductor_timer import min_valid_timing

    def timed(interval_ns: int) -> float:
        clock = FakeClock()
        timer = FakeTimer(clock)
        timer.overhead_ms = 0.005  # a self-test's estimate of one stamp
        s, e = timer.event(), timer.event()
        s.record()
        clock.advance(interval_ns)
        e.record()
        return min_valid_timing([(s, e)])

    below, above = timed(4_000), timed(6_000)
    assert 0 < below < above
    assert above == pytest.approx(0.001, abs=64e-6)  # within two 32 ns ticks


@pytest.mark.timeout(180)
def test_inductor_cpu_event_pairs_keep_upstream_behaviour(cc_on):
    b = pytest.importorskip("torch._inductor.runtime.benchmarking")
    pairs = b.InductorBenchmarker().get_event_pairs(2, device_type="cpu")
    assert not isinstance(pairs[0][0], StampEvent)


@pytest.mark.timeout(180)
def test_inductor_triton_benchmarker_runs_on_the_cc_timer(cc_on):
    """The real TritonBenchmarker.benchmark_gpu (inductor's default benchmarker) end to end."""
    b = pytest.importorskip("torch._inductor.runtime.benchmarking")
    tb = b.TritonBenchmarker()
    assert tb.triton_do_bench is cc_do_bench
    clock = FakeClock()
    with use_timer(FakeTimer(clock, stamp_cost_ns=1500)):
        assert tb.benchmark_gpu(clock.work(0.25)) == pytest.approx(0.25, abs=1e-4)
        assert tb.benchmark_gpu(clock.work(0.25), quantiles=(0.5, 0.2)) == pytest.approx(0.25, abs=1e-4)
