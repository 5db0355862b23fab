"""Does a timer let an autotuner pick the fastest configuration? Shared by tests and ``bench timer``.

Two tuners, both keeping ``min`` over configurations as Triton, inductor and FlashInfer do:
- :func:`event_style_time`: inductor's ``InductorBenchmarker`` rule, the minimum over individually
  timed calls, each read from a plain event pair (no rejection of bad readings);
- :func:`cc_style_time`: cc_runtime's :func:`~cc_runtime.timer.benchmark.measure` median (invalid
  intervals rejected), which is what the patched Triton/inductor/FlashInfer tuners use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .benchmark import measure
from .events import Timer


def event_style_time(timer: Timer, fn: Callable[[], Any], iters: int = 20) -> float:
    """Minimum over ``iters`` single-call event pairs (inductor's ``get_event_pairs_min_timing``)."""
    fn()
    timer.synchronize()
    pairs = timer.pairs(iters)
    for start, end in pairs:
        start.record()
        fn()
        end.record()
    timer.synchronize()
    return min(s.elapsed_time(e) for s, e in pairs)


def cc_style_time(timer: Timer, fn: Callable[[], Any], warmup: float = 1.0, rep: float = 5.0) -> float:
    return float(measure(fn, warmup, rep, timer=timer, flush_l2=False).summarize(quantiles=(0.5,)))


def pick(configs: Mapping[str, Callable[[], Any]], time_of: Callable[[Callable[[], Any]], float]) -> str:
    """The configuration with the smallest time (NaN counts as worst)."""
    times = {name: time_of(fn) for name, fn in configs.items()}
    return min(times, key=lambda k: times[k] if not math.isnan(times[k]) else math.inf)


def accuracy(trials: int, run_trial: Callable[[int], str], right: str) -> float:
    """Fraction of ``trials`` in which ``run_trial(i)`` names ``right``."""
    if trials <= 0:
        return math.nan
    return sum(run_trial(i) == right for i in range(trials)) / trials


# -- a fake GPU with realistic noise, for CPU tests and the CPU benchmark -------------------------------
#: Four configurations 2% apart (the fastest is "b"): close enough that run-to-run noise matters.
FAKE_RANK_MS = {"a": 0.100, "b": 0.098, "c": 0.102, "d": 0.104}
FAKE_FASTEST = "b"
#: Per-run noise of a fake kernel: +-4% jitter, and 10% of runs slowed by 30% (clock throttling,
#: another process's kernel, a preempted launch), as real GPU timings show.
FAKE_JITTER = 0.04
FAKE_OUTLIER_P = 0.10
FAKE_OUTLIER_SCALE = 1.30


def fake_configs(clock: Any, rng: Any, true_ms: Mapping[str, float] = FAKE_RANK_MS) -> dict[str, Callable[[], None]]:
    """Configurations that "run" on a :class:`~cc_runtime.timer.FakeClock` with :data:`FAKE_JITTER`
    jitter and :data:`FAKE_OUTLIER_P` slow outliers (seeded by ``rng``, a ``random.Random``)."""

    def make(ms: float) -> Callable[[], None]:
        def run() -> None:
            t = ms * (1 + rng.uniform(-FAKE_JITTER, FAKE_JITTER))
            if rng.random() < FAKE_OUTLIER_P:
                t *= FAKE_OUTLIER_SCALE
            clock.advance(t * 1e6)

        return run

    return {name: make(ms) for name, ms in true_ms.items()}
