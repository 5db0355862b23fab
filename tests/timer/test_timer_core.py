"""Timer core on CPU: statistics, repeat sizing, stamp arena, self-test, selection.

The fake clock (cc_runtime.timer.FakeClock) stands in for the GPU and its %globaltimer register:
"running a kernel" advances it, a stamp reads it quantized to the timer's granularity.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc_runtime.timer import (
    FakeClock,
    FakeTimer,
    TimerError,
    TimingStats,
    do_bench,
    get_timer,
    measure,
    measure_cudagraph,
    plan_repeats,
    quantile,
    read_kernel,
    use_timer,
)
from cc_runtime.timer import select as timer_select
from cc_runtime.timer.events import CudaEventTimer, StampArena, run_self_test
from cc_runtime.timer.kernel_files import KernelFileError

# -- statistics -------------------------------------------------------------------------------------


def test_stats_reject_non_positive_and_nan():
    s = TimingStats.of([1.0, -0.5, 0.0, math.nan, math.inf, 2.0, 3.0])
    assert s.n == 3 and s.n_rejected == 4
    assert s.min == 1.0 and s.median == 2.0 and s.mean == 2.0
    assert s.p20 == pytest.approx(1.4) and s.p80 == pytest.approx(2.6)
    assert s.iqr == pytest.approx(1.0)


def test_stats_with_nothing_valid_is_nan_not_crash():
    s = TimingStats.of([-1.0, 0.0])
    assert s.n == 0 and s.n_rejected == 2 and math.isnan(s.median)


@given(st.lists(st.floats(0.001, 1000), min_size=1, max_size=50), st.floats(0, 1))
def test_quantile_matches_numpy_linear(values, q):
    np = pytest.importorskip("numpy")
    assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)), rel=1e-9, abs=1e-12)


def test_summarize_follows_triton_convention():
    s = TimingStats.of([1.0, 2.0, 3.0, 4.0])
    assert s.summarize(quantiles=(0.5, 0.2, 0.8)) == pytest.approx([2.5, 1.6, 3.4])
    assert s.summarize(quantiles=(0.5,)) == pytest.approx(2.5)  # one quantile -> a scalar, like Triton
    assert s.summarize(return_mode="min") == 1.0
    assert s.summarize(return_mode="max") == 4.0
    assert s.summarize(return_mode="median") == 2.5
    assert s.summarize(return_mode="all") == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError):
        s.summarize(return_mode="p99")


def test_summarize_agrees_with_real_triton_when_installed():
    testing = pytest.importorskip("triton.testing")
    times = [0.3, 0.1, 0.25, 0.2, 0.4]
    s = TimingStats.of(times)
    for mode in ("min", "max", "mean", "median"):
        assert s.summarize(return_mode=mode) == pytest.approx(testing._summarize_statistics(times, None, mode))
    assert s.summarize(quantiles=(0.5, 0.2, 0.8)) == pytest.approx(
        testing._summarize_statistics(times, (0.5, 0.2, 0.8), "mean"))


# -- repeat sizing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("estimate", [0.0, -1.0, math.nan, math.inf * 0, 1e-12])
def test_plan_never_divides_by_a_zero_estimate(estimate):
    plan = plan_repeats(estimate, granularity_ms=0.001, warmup_ms=25, rep_ms=100)
    assert plan.estimate_ms == 0.001  # floored to one tick
    assert plan.calls_per_sample == 100
    assert 1 <= plan.n_samples <= 10_000 and plan.n_warmup >= 1


@given(est=st.floats(1e-6, 50), gran=st.floats(1e-6, 0.01), rep=st.floats(1, 200), flush=st.floats(0, 1))
@settings(max_examples=200, deadline=None)
def test_plan_each_sample_spans_100_ticks(est, gran, rep, flush):
    plan = plan_repeats(est, gran, 25, rep, overhead_per_sample_ms=flush, max_samples=5000)
    assert plan.calls_per_sample * plan.estimate_ms >= 100 * gran * (1 - 1e-9)
    assert 1 <= plan.n_samples <= 5000
    assert plan.calls_per_sample == 1 or (plan.calls_per_sample - 1) * plan.estimate_ms < 100 * gran


def test_plan_budget_like_triton():
    plan = plan_repeats(0.5, 0.000032, 25, 100, overhead_per_sample_ms=0.5)
    assert plan.calls_per_sample == 1
    assert plan.n_samples == 100  # 100 ms / (0.5 flush + 0.5 call)
    assert plan.n_warmup == 25


# -- stamp arena ------------------------------------------------------------------------------------


def test_events_read_back_once_per_measurement():
    clock = FakeClock()
    t = FakeTimer(clock, granularity_ns=1)
    pairs = t.pairs(50)
    for i, (s, e) in enumerate(pairs):
        s.record()
        clock.advance(1000 * (i + 1))
        e.record()
    assert t.readbacks == 0
    got = [s.elapsed_time(e) for s, e in pairs]
    assert got == [pytest.approx(0.001 * (i + 1)) for i in range(50)]
    assert t.readbacks == 1
    assert all(s.query() and e.query() for s, e in pairs)


def test_event_misuse_raises_clear_errors():
    t = FakeTimer(FakeClock(), capacity=4)
    a, b = t.event(), t.event()
    with pytest.raises(TimerError, match="never recorded"):
        a.elapsed_time(b)
    a.record()
    for _ in range(4):  # wrap the ring: a's slot is reused
        t.event().record()
    b.record()
    with pytest.raises(TimerError, match="reused"):
        a.elapsed_time(b)
    with pytest.raises(TimerError, match="same timer"):
        b.elapsed_time(FakeTimer(FakeClock()).event())


def test_granularity_quantizes_stamps():
    clock = FakeClock(start_ns=0)
    t = FakeTimer(clock, granularity_ns=1000)
    s, e = t.event(), t.event()
    s.record()
    clock.advance(999)
    e.record()
    assert s.elapsed_time(e) == 0.0  # below one tick: raw reading is zero; do_bench must cope


# -- measure / do_bench -----------------------------------------------------------------------------


def test_measure_subtracts_stamp_overhead_and_reads_back_twice():
    clock = FakeClock()
    t = FakeTimer(clock, granularity_ns=32, stamp_cost_ns=1500)
    r = measure(clock.work(0.020), warmup=1, rep=5, timer=t)
    assert r.n > 100 and r.n_rejected == 0
    assert r.median == pytest.approx(0.020, abs=64e-6)  # within two ticks
    assert r.stamp_overhead_ms == pytest.approx(0.0015, abs=64e-6)
    assert r.readbacks == 2
    assert r.timer == "fake" and r.calls_per_sample == 1


def test_measure_groups_calls_below_100_ticks():
    clock = FakeClock()
    t = FakeTimer(clock, granularity_ns=1000)  # a pre-Hopper 1 us globaltimer
    r = measure(clock.work(0.004), warmup=1, rep=10, timer=t)
    assert r.calls_per_sample == 25  # 25 x 4 us = 100 ticks
    assert r.median == pytest.approx(0.004, rel=0.01)


def test_measure_zero_time_function_is_floored_not_divided():
    clock = FakeClock()
    t = FakeTimer(clock, granularity_ns=32)
    r = measure(lambda: None, warmup=1, rep=1, timer=t)
    # A function that takes no device time has no valid interval: reported as inf (a tuner skips it).
    assert r.n == 0 and r.n_rejected > 0 and r.summarize() == math.inf
    assert any("estimate unusable" in n for n in r.notes)


def test_tiny_function_below_one_tick_groups_calls():
    clock = FakeClock()
    t = FakeTimer(clock, granularity_ns=32, stamp_cost_ns=1500)
    r = measure(clock.work(0.000010), warmup=1, rep=2, timer=t)  # 10 ns: below one 32 ns tick
    assert r.calls_per_sample == 100 and r.n_rejected == 0
    assert r.median == pytest.approx(0.000010, abs=1e-6)
    assert r.summarize(return_mode="mean") == pytest.approx(0.000010, abs=1e-6)


def test_samples_below_the_stamp_cost_never_rank_behind_slower_ones():
    from cc_runtime.timer.benchmark import _finish

    t = FakeTimer(FakeClock(), granularity_ns=32)
    tiny = _finish(t, [0.0009, 0.0008], 1, 0.001, 0.001, 0, [])  # all shorter than the 1 us stamp
    slower = _finish(t, [0.0011, 0.0012], 1, 0.001, 0.001, 0, [])
    assert tiny.median == pytest.approx(32e-6)
    assert slower.median == pytest.approx(0.00015)
    assert any("one timer tick" in n for n in tiny.notes)


def test_negative_event_readings_are_rejected_and_counted():
    readings = iter([-1.0, 0.05, math.nan, 0.05] * 100_000)
    clock = FakeClock()
    t = FakeTimer(clock, corrupt=lambda ms: next(readings))
    r = measure(clock.work(0.05), warmup=1, rep=5, timer=t)
    assert r.n_rejected > 0 and r.n > 0
    assert r.min == pytest.approx(0.05) and r.median == pytest.approx(0.05)
    assert any("rejected" in n for n in r.notes)


def test_all_readings_invalid_returns_inf_for_tuners():
    clock = FakeClock()
    t = FakeTimer(clock, corrupt=lambda ms: -abs(ms) - 1)
    r = measure(clock.work(0.05), warmup=1, rep=2, timer=t)
    assert r.n == 0
    assert r.summarize(quantiles=(0.5, 0.2, 0.8)) == [math.inf] * 3
    assert r.summarize(return_mode="mean") == math.inf


def test_do_bench_uses_the_pinned_timer_and_triton_return_modes():
    clock = FakeClock()
    with use_timer(FakeTimer(clock, stamp_cost_ns=500)):
        q = do_bench(clock.work(0.1), warmup=1, rep=5, quantiles=(0.5, 0.2, 0.8))
        mean = do_bench(clock.work(0.1), warmup=1, rep=5)
        allv = do_bench(clock.work(0.1), warmup=1, rep=5, return_mode="all")
    assert q == [pytest.approx(0.1, abs=1e-4)] * 3
    assert mean == pytest.approx(0.1, abs=1e-4)
    assert isinstance(allv, list) and len(allv) >= 40
    with pytest.raises(ValueError):
        do_bench(clock.work(0.1), return_mode="fastest")


def test_measure_cudagraph_on_fake_clock():
    clock = FakeClock()
    t = FakeTimer(clock, stamp_cost_ns=1500)
    r = measure_cudagraph(clock.work(0.05), rep=20, timer=t)
    assert r.n == 10 and r.calls_per_sample == 400
    assert r.median == pytest.approx(0.05, rel=1e-4)


# -- self-test and selection ------------------------------------------------------------------------


def test_self_test_passes_on_a_sane_clock():
    t = FakeTimer(FakeClock(), granularity_ns=32, stamp_cost_ns=1000)
    res = run_self_test(t, 20_000, 200_000, granularity_ns=32)
    assert res.ok, res.reasons
    assert res.granularity_ms == pytest.approx(32e-6)
    assert res.overhead_ms == pytest.approx(0.001, abs=64e-6)
    assert res.large_work_ms > res.small_work_ms > 0


def test_self_test_keeps_a_first_launch_compile_out_of_the_intervals():
    """Triton compiles (and CUDA lazily loads) a kernel at its first launch: seconds of host time
    before the first spin runs. The self-test must not read that as the small workload's duration."""
    class CompilesOnFirstSpin(FakeTimer):
        compiled = False

        def spin(self, amount):
            if not self.compiled:
                self.compiled = True
                self.clock.advance(2e9)  # 2 s of JIT before the kernel runs
            super().spin(amount)

    res = run_self_test(CompilesOnFirstSpin(FakeClock(), granularity_ns=32, stamp_cost_ns=1000), 20_000, 200_000)
    assert res.ok, res.reasons
    assert res.small_work_ms == pytest.approx(0.021, abs=1e-4)  # 20 us of spin + one 1 us stamp


class QueuedDevice(StampArena):
    """A device with a launch queue: each launch costs the host ``gap_ns``; a stamp runs when the device
    is free, takes ``stamp_ns`` of device time and reads the clock then; ``spin(n)`` is n ns of work."""

    name = "queued"

    def __init__(self, gap_ns: int, stamp_ns: int) -> None:
        super().__init__(64)
        self.gap_ns, self.stamp_ns = gap_ns, stamp_ns
        self.host = self.free = 0
        self.stamps = [0] * 64

    def _launch(self, device_ns: int) -> int:
        self.host += self.gap_ns
        start = max(self.host, self.free)
        self.free = start + device_ns
        return start

    def _write(self, slot, stream):
        self.stamps[slot] = self._launch(self.stamp_ns)

    def _read(self, lo, hi):
        return self.stamps[lo:hi]

    def spin(self, amount):
        self._launch(amount)

    def synchronize(self):
        self.host = max(self.host, self.free)


def test_self_test_compiles_the_stamp_kernel_before_the_busy_window():
    """Triton compiles the stamp kernel at its first launch (seconds of host time). Were that inside
    the busy window, the device would go idle and the empty intervals would measure the host's launch
    gap (8 us) instead of a stamp's device cost (1 us)."""

    class CompilesOnFirstStamp(QueuedDevice):
        compiled = False

        def _write(self, slot, stream):
            if not self.compiled:
                self.compiled = True
                self.host += 2_000_000_000  # 2 s of JIT on the host before the first stamp launches
            super()._write(slot, stream)

    res = run_self_test(CompilesOnFirstStamp(gap_ns=8000, stamp_ns=1000), 20_000, 200_000)
    assert res.ok, res.reasons
    assert res.overhead_ms == pytest.approx(0.001)


def test_self_test_overhead_is_a_stamps_device_cost_not_the_launch_gap():
    """Launching from Python takes longer than a stamp runs: back-to-back records on an idle device
    would measure the host's 8 us gap; the self-test keeps the device busy and measures the 1 us."""
    res = run_self_test(QueuedDevice(gap_ns=8000, stamp_ns=1000), 20_000, 200_000)
    assert res.ok, res.reasons
    assert res.overhead_ms == pytest.approx(0.001)
    assert res.small_work_ms == pytest.approx(0.021) and res.large_work_ms == pytest.approx(0.201)


def test_self_test_fails_when_work_is_invisible():
    class Frozen(FakeTimer):
        def spin(self, amount):  # the "kernel" does not advance the clock
            return None

    res = run_self_test(Frozen(FakeClock(), stamp_cost_ns=0), 20_000, 200_000)
    assert not res.ok
    assert any("larger delta" in r for r in res.reasons)


def test_self_test_fails_when_clock_goes_backwards():
    class Backwards(FakeTimer):
        def _write(self, slot, stream):
            self._buf[slot] = 10**12 - slot * 1000

    res = run_self_test(Backwards(FakeClock()), 20_000, 200_000)
    assert not res.ok and any("monotonic" in r for r in res.reasons)


def test_get_timer_on_cpu_is_the_wall_clock(monkeypatch):
    monkeypatch.setattr(timer_select, "_cuda_device_index", lambda device: None)
    timer_select.reset()
    t = get_timer()
    assert t.name == "wall" and not t.is_cuda and t.granularity_ms > 0


def test_invalid_timer_setting_does_not_crash(monkeypatch):
    monkeypatch.setenv("CC_RUNTIME_TIMER", "sundial")
    monkeypatch.setattr(timer_select, "_cuda_device_index", lambda device: None)
    assert get_timer().name == "wall"


def test_globaltimer_unavailable_falls_back_to_events_with_warning(monkeypatch):
    """Stand-in: both globaltimer ways fail (as without cuda-python and Triton); no GPU is touched."""
    def broken(index):
        raise ImportError("not here")

    monkeypatch.setattr(timer_select, "_driver_kernels", broken)
    monkeypatch.setattr(timer_select, "_triton_kernels", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = timer_select._build_cuda_timer(0, "auto")
    assert isinstance(t, CudaEventTimer)
    assert any("globaltimer is unavailable" in str(w.message) for w in caught)
    assert t.name == "cuda_event" and not t.subtract_overhead


def test_cuda_event_setting_skips_globaltimer(monkeypatch):
    monkeypatch.setattr(timer_select, "_driver_kernels", lambda i: pytest.fail("must not try globaltimer"))
    assert isinstance(timer_select._build_cuda_timer(0, "cuda_event"), CudaEventTimer)


# -- kernel files -----------------------------------------------------------------------------------


def test_kernel_file_is_found_and_missing_ones_say_so():
    ptx = read_kernel("globaltimer.ptx")
    assert "%globaltimer" in ptx and ".entry cc_globaltimer_stamp" in ptx
    with pytest.raises(KernelFileError):
        read_kernel("nope.ptx")


def _ptxas() -> str | None:
    try:
        import triton

        cand = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
        if cand.is_file():
            return str(cand)
    except Exception:  # noqa: BLE001
        pass
    return shutil.which("ptxas")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("arch", ["sm_70", "sm_90", "sm_100"])
def test_ptx_assembles_for_volta_hopper_blackwell(tmp_path, arch):
    """ptxas (Triton ships one) assembles the PTX offline: the driver's JIT gets valid input."""
    ptxas = _ptxas()
    if ptxas is None:
        pytest.skip("no ptxas (install triton)")
    src = tmp_path / "globaltimer.ptx"
    src.write_text(read_kernel("globaltimer.ptx"))
    out = subprocess.run([ptxas, f"-arch={arch}", str(src), "-o", str(tmp_path / "k.cubin")],
                         capture_output=True, text=True, timeout=60)
    if "is not defined for option" in out.stderr:
        pytest.skip(f"this ptxas has no {arch} (CUDA 13 dropped Volta)")
    assert out.returncode == 0, out.stderr


@pytest.mark.timeout(240)
def test_triton_stamp_kernels_compile_for_hopper():
    """Triton compiles the second-way kernels for sm_90 without a GPU (its own ptxas)."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from cc_runtime.timer import triton_stamp as ts

    target = GPUTarget("cuda", 90, 32)
    for fn, sig, needle in [(ts._stamp_kernel, {"buf_ptr": "*i64", "index": "i32"}, "%globaltimer"),
                            (ts._granularity_kernel, {"out_ptr": "*i64", "reads": "i32"}, "%globaltimer"),
                            (ts._spin_kernel, {"out_ptr": "*i64", "cycles": "i64"}, "%clock64")]:
        k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs={}), target=target,
                           options={"num_warps": 1})
        assert needle in k.asm["ptx"]


def test_driver_module_imports_without_gpu():
    """cuda-python imports on CPU; launching needs libcuda and is covered by the gpu tests."""
    cd = pytest.importorskip("cc_runtime.timer.cuda_driver")
    try:
        drv = cd.import_driver()
    except ImportError:
        pytest.skip("cuda-python not installed")
    assert hasattr(drv, "cuLaunchKernel") and hasattr(drv, "cuModuleLoadData")


def test_kernel_file_falls_back_to_the_source_tree(monkeypatch):
    """A source checkout that was never installed has no cc_runtime.kernels package."""
    import importlib.resources

    def no_package(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", no_package)
    assert ".entry cc_spin_cycles" in read_kernel("globaltimer.ptx")


def test_drop_ins_have_tritons_signatures():
    import inspect

    testing = pytest.importorskip("triton.testing")
    from cc_runtime.timer import do_bench_cudagraph

    for ours, theirs in ((do_bench, testing.do_bench), (do_bench_cudagraph, testing.do_bench_cudagraph)):
        a, b = inspect.signature(ours).parameters, inspect.signature(theirs).parameters
        assert list(a) == list(b)
        assert [p.default for p in a.values()] == [p.default for p in b.values()]
