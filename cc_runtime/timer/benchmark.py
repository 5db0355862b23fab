"""``do_bench`` / ``do_bench_cudagraph`` with Triton's signatures and return modes, timed by a CC-safe
timer, plus :func:`measure` / :func:`measure_cudagraph` returning a :class:`TimingResult`.

Differences from Triton (3.4-3.9), each on purpose:
- the timer is ``get_timer()`` (globaltimer under CC) instead of CUDA events;
- the per-call estimate comes from individually stamped calls (L2 flush outside the stamps) and an
  estimate of zero or below one tick is floored, never divided by;
- a sample groups back-to-back calls so it spans >= 100 timer ticks (only for calls shorter than
  100 ticks: 3.2 us on Hopper, 100 us on GPUs whose globaltimer ticks every 1 us); the L2 is flushed
  once per sample;
- for stamp timers the measured cost of an empty interval (a stamp is a kernel) is subtracted;
- non-positive and NaN samples are rejected, and the number rejected is reported;
- all stamps of a measurement are read back in two copies (estimate, samples), not one per event.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .events import Timer, _noop
from .select import get_timer
from .stats import RETURN_MODES, RepeatPlan, TimingStats, floor_estimate, is_valid_interval, plan_repeats

log = logging.getLogger("cc_runtime.timer")

N_ESTIMATE = 5
N_EMPTY = 10


@dataclass
class TimingResult:
    """One measurement: statistics over accepted samples (ms per call) and how they were taken."""

    stats: TimingStats
    timer: str
    granularity_ms: float
    stamp_overhead_ms: float
    calls_per_sample: int
    estimate_ms: float
    readbacks: int
    notes: list[str] = field(default_factory=list)

    n = property(lambda self: self.stats.n)
    min = property(lambda self: self.stats.min)
    median = property(lambda self: self.stats.median)
    mean = property(lambda self: self.stats.mean)
    stdev = property(lambda self: self.stats.stdev)
    p20 = property(lambda self: self.stats.p20)
    p80 = property(lambda self: self.stats.p80)
    iqr = property(lambda self: self.stats.iqr)
    n_rejected = property(lambda self: self.stats.n_rejected)
    samples = property(lambda self: self.stats.samples)

    def summarize(self, quantiles: Sequence[float] | None = None, return_mode: str = "mean") -> Any:
        """Triton's return convention; a measurement with no valid sample returns ``inf`` (a tuner
        then skips the configuration instead of crowning it with a negative time)."""
        if self.stats.n == 0:
            if quantiles is not None:
                return math.inf if len(quantiles) == 1 else [math.inf] * len(quantiles)
            return [] if return_mode == "all" else math.inf
        return self.stats.summarize(quantiles, return_mode)

    def as_dict(self) -> dict[str, Any]:
        s = self.stats
        return {"n": s.n, "min": s.min, "median": s.median, "mean": s.mean, "stdev": s.stdev, "p20": s.p20,
                "p80": s.p80, "iqr": s.iqr, "n_rejected": s.n_rejected, "timer": self.timer,
                "granularity_ms": self.granularity_ms, "stamp_overhead_ms": self.stamp_overhead_ms,
                "calls_per_sample": self.calls_per_sample, "estimate_ms": self.estimate_ms,
                "readbacks": self.readbacks, "notes": list(self.notes)}


def _median_valid(values: Sequence[float]) -> float:
    ok = [v for v in values if is_valid_interval(v)]
    return statistics.median(ok) if ok else math.nan


def _clear_grads(grad_to_none: Any) -> None:
    if grad_to_none is not None:
        for x in grad_to_none:
            x.grad = None


def _overhead(timer: Timer, empty: Sequence[float]) -> float:
    if not timer.subtract_overhead:
        return 0.0
    measured = [v for v in empty if math.isfinite(v) and v >= 0]
    if measured:
        return statistics.median(measured)
    return timer.overhead_ms if math.isfinite(timer.overhead_ms) else 0.0


def _sample(timer: Timer, n: int, before: Callable[[], None], body: Callable[[], Any]) -> tuple[list[float], float]:
    """``n`` stamped intervals around ``body()`` (``before()`` runs outside the stamps), then empty
    intervals for the stamp's own cost; all read back in one copy. Returns (raw intervals, overhead)."""
    pairs = timer.pairs(n)
    for start, end in pairs:
        before()
        start.record()
        body()
        end.record()
    empty = timer.pairs(N_EMPTY) if timer.subtract_overhead else []
    for start, end in empty:
        start.record()
        end.record()
    timer.synchronize()
    raw = [s.elapsed_time(e) for s, e in pairs]
    return raw, _overhead(timer, [s.elapsed_time(e) for s, e in empty])


def _finish(timer: Timer, raw: Sequence[float], calls: int, overhead: float, plan_est: float,
            readbacks0: int, notes: list[str]) -> TimingResult:
    samples = [(r - overhead) / calls for r in raw]
    stats = TimingStats.of(samples)
    if stats.n == 0 and overhead > 0 and any(is_valid_interval(r) for r in raw):
        # Shorter than a stamp's own cost: below resolution, so one tick (never the uncorrected time,
        # which would rank this function behind slower ones whose samples were corrected).
        notes.append("every sample was shorter than the stamp overhead; reporting one timer tick")
        tick = max(timer.granularity_ms, 1e-6)
        stats = TimingStats.of([tick / calls for r in raw if is_valid_interval(r)])
    if stats.n_rejected:
        notes.append(f"rejected {stats.n_rejected} of {len(raw)} samples (non-positive or NaN)")
        log.debug("cc_runtime timer: %s", notes[-1])
    return TimingResult(stats=stats, timer=timer.name, granularity_ms=timer.granularity_ms,
                        stamp_overhead_ms=overhead, calls_per_sample=calls, estimate_ms=plan_est,
                        readbacks=timer.readbacks - readbacks0, notes=notes)


def measure(fn: Callable[[], Any], warmup: float = 25, rep: float = 100, grad_to_none: Any = None, *,
            timer: Timer | None = None, flush_l2: bool = True, max_samples: int = 10_000) -> TimingResult:
    """Time ``fn`` like Triton's ``do_bench`` (warmup/rep in ms) and return the full result."""
    timer = timer or get_timer()
    readbacks0 = timer.readbacks
    notes: list[str] = []
    flush = timer.l2_flusher() if flush_l2 else _noop

    fn()
    timer.synchronize()

    # Estimate: per call (fn between stamps) and per cycle (flush + fn), like Triton's 5 calls.
    est = [(timer.event(), timer.event(), timer.event()) for _ in range(N_ESTIMATE)]
    t0 = time.perf_counter()
    for a, b, c in est:
        a.record()
        flush()
        b.record()
        fn()
        c.record()
    timer.synchronize()
    host_cycle_ms = (time.perf_counter() - t0) * 1e3 / N_ESTIMATE  # an upper bound: host waited for the device
    call_ms = _median_valid([b.elapsed_time(c) for _, b, c in est])
    cycle_ms = _median_valid([a.elapsed_time(c) for a, _, c in est])
    overhead_guess = timer.overhead_ms if timer.subtract_overhead else 0.0
    if not math.isfinite(call_ms):
        # Every reading invalid: size from host time, never from a floor that could multiply a long
        # kernel by 100 calls per sample.
        notes.append(f"device estimate unusable; sized from host time {host_cycle_ms:.3g} ms per cycle")
        call_ms = cycle_ms = host_cycle_ms
    else:
        call_ms -= overhead_guess
        if call_ms <= 0:  # readable but below one tick once the stamp's cost is removed
            notes.append("estimate below the timer's resolution; samples group calls to span 100 ticks")
    flush_ms = (cycle_ms - call_ms) if math.isfinite(cycle_ms) and cycle_ms > call_ms else 0.0
    plan: RepeatPlan = plan_repeats(call_ms, timer.granularity_ms, warmup, rep,
                                    overhead_per_sample_ms=flush_ms, max_samples=max_samples)

    for _ in range(plan.n_warmup):
        fn()

    def before() -> None:
        _clear_grads(grad_to_none)
        flush()

    def calls() -> None:
        for _ in range(plan.calls_per_sample):
            fn()

    raw, overhead = _sample(timer, plan.n_samples, before, calls)
    return _finish(timer, raw, plan.calls_per_sample, overhead, plan.estimate_ms, readbacks0, notes)


def _check_return_mode(return_mode: str) -> None:
    if return_mode not in RETURN_MODES:
        raise ValueError(f"return_mode must be min, max, mean, median or all, got {return_mode!r}")


def do_bench(fn: Callable[[], Any], warmup: float = 25, rep: float = 100, grad_to_none: Any = None,
             quantiles: Sequence[float] | None = None, return_mode: str = "mean") -> Any:
    """Drop-in for ``triton.testing.do_bench`` timed by the CC-safe timer."""
    _check_return_mode(return_mode)  # before measuring: a typo must not cost a benchmark run
    return measure(fn, warmup, rep, grad_to_none).summarize(quantiles, return_mode)


def measure_cudagraph(fn: Callable[[], Any], rep: float = 20, grad_to_none: Any = None, *,
                      timer: Timer | None = None, n_retries: int = 10) -> TimingResult:
    """Triton's ``do_bench_cudagraph`` procedure (one graph of n calls, replayed ``n_retries`` times).

    Off the GPU (fake or wall-clock timer) the "graph" is a plain loop of the same n calls, so the
    sizing and statistics stay testable on a CPU.
    """
    timer = timer or get_timer()
    readbacks0 = timer.readbacks
    notes: list[str] = []
    if timer.is_cuda:
        import torch

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())  # fn's inputs may still be in flight on the caller's stream
        ctx: Any = torch.cuda.stream(side)
    else:
        import contextlib

        torch = None  # type: ignore[assignment]
        ctx = contextlib.nullcontext()
    with ctx:
        fn()
        _clear_grads(grad_to_none)
        if grad_to_none is not None:
            for x in grad_to_none:
                x.detach_()
                x.requires_grad_(True)
                x.grad = None
        start, end = timer.event(), timer.event()
        timer.synchronize()
        t0 = time.perf_counter()
        start.record()
        for _ in range(5):
            fn()
        end.record()
        timer.synchronize()
        host_ms = (time.perf_counter() - t0) * 1e3 / 5
        overhead_guess = timer.overhead_ms if timer.subtract_overhead else 0.0
        est_ms = (start.elapsed_time(end) - overhead_guess) / 5
        if not is_valid_interval(est_ms):
            notes.append(f"device estimate unusable ({est_ms}); sized from host time {host_ms:.3g} ms per call")
            est_ms = host_ms
        est = floor_estimate(est_ms, timer.granularity_ms)
        n_repeat = max(1, int(rep / est), math.ceil(100 * timer.granularity_ms / est - 1e-9))

        def body() -> None:
            for _ in range(n_repeat):
                _clear_grads(grad_to_none)
                fn()

        if torch is not None:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                body()
            torch.cuda.synchronize()
            replay: Callable[[], Any] = graph.replay
        else:
            replay = body
        raw, overhead = _sample(timer, n_retries, _noop, replay)
    return _finish(timer, raw, n_repeat, overhead, est, readbacks0, notes)


def do_bench_cudagraph(fn: Callable[[], Any], rep: float = 20, grad_to_none: Any = None,
                       quantiles: Sequence[float] | None = None, return_mode: str = "mean") -> Any:
    """Drop-in for ``triton.testing.do_bench_cudagraph`` timed by the CC-safe timer."""
    _check_return_mode(return_mode)  # before measuring: a typo must not cost a benchmark run
    return measure_cudagraph(fn, rep, grad_to_none).summarize(quantiles, return_mode)
