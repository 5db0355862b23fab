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
