"""Statistics and repeat sizing for kernel timings: pure Python, no torch, testable with a fake clock.

Rules the timers rely on: a non-positive or NaN interval is rejected, never averaged (CUDA events under
CC return negative values); an estimate of zero never becomes a divisor; each sample spans at least
``MIN_SPAN_GRANULES`` timer ticks, so one tick of quantization costs at most 1% of a sample.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_SPAN_GRANULES = 100
RETURN_MODES = ("min", "max", "mean", "median", "all")


def is_valid_interval(ms: float) -> bool:
    return isinstance(ms, (int, float)) and math.isfinite(ms) and ms > 0


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, and Triton's ``_quantile``)."""
    if not 0 <= q <= 1:
        raise ValueError("Quantiles must be in the range [0, 1]")
    if not values:
        return math.nan
    a = sorted(values)
    point = q * (len(a) - 1)
    lo, hi = math.floor(point), math.ceil(point)
    t = point - lo
    return (1 - t) * a[lo] + t * a[hi]


@dataclass(frozen=True)
class TimingStats:
    """Summary of the accepted samples (milliseconds); ``n_rejected`` counts dropped intervals."""

    n: int
    min: float
    median: float
    mean: float
    stdev: float
    p20: float
    p80: float
    iqr: float
    n_rejected: int = 0
    samples: tuple[float, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, values: Iterable[float]) -> TimingStats:
        raw = list(values)
        ok = [float(v) for v in raw if is_valid_interval(v)]
        rejected = len(raw) - len(ok)
        if not ok:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan, nan, rejected, ())
        return cls(
            n=len(ok),
            min=min(ok),
            median=statistics.median(ok),
            mean=statistics.fmean(ok),
            stdev=statistics.stdev(ok) if len(ok) > 1 else 0.0,
            p20=quantile(ok, 0.2),
            p80=quantile(ok, 0.8),
            iqr=quantile(ok, 0.75) - quantile(ok, 0.25),
            n_rejected=rejected,
            samples=tuple(ok),
        )

    def summarize(self, quantiles: Sequence[float] | None = None, return_mode: str = "mean") -> Any:
        """Triton's ``do_bench`` return convention: quantiles win; else one statistic or all samples."""
        if return_mode not in RETURN_MODES:
            raise ValueError(f"return_mode must be one of {RETURN_MODES}, got {return_mode!r}")
        if quantiles is not None:
            ret = [quantile(self.samples, q) for q in quantiles]
            return ret[0] if len(ret) == 1 else ret
        if return_mode == "all":
            return list(self.samples)
        return {"min": self.min, "max": max(self.samples) if self.samples else math.nan,
                "mean": self.mean, "median": self.median}[return_mode]


def floor_estimate(estimate_ms: float, granularity_ms: float) -> float:
    """A usable per-call estimate: a zero/negative/NaN estimate means "below one tick"."""
    floor = max(granularity_ms, 1e-6)
    if not math.isfinite(estimate_ms) or estimate_ms < floor:
        return floor
    return estimate_ms


@dataclass(frozen=True)
class RepeatPlan:
    n_warmup: int
    n_samples: int
    calls_per_sample: int
    estimate_ms: float
    cycle_ms: float


def plan_repeats(
    estimate_ms: float,
    granularity_ms: float,
    warmup_ms: float,
    rep_ms: float,
    *,
    overhead_per_sample_ms: float = 0.0,
    max_samples: int = 10_000,
    min_span_granules: int = MIN_SPAN_GRANULES,
) -> RepeatPlan:
    """How many warmup calls, samples, and calls per sample fit the time budgets.

    ``estimate_ms`` is one call of the function; ``overhead_per_sample_ms`` is what each sample costs
    besides the calls (an L2 flush). A sample groups ``calls_per_sample`` back-to-back calls so that it
    spans ``min_span_granules`` ticks of the timer.
    """
    est = floor_estimate(estimate_ms, granularity_ms)
    calls = max(1, math.ceil(min_span_granules * max(granularity_ms, 0.0) / est - 1e-9))
    overhead = overhead_per_sample_ms if math.isfinite(overhead_per_sample_ms) and overhead_per_sample_ms > 0 else 0.0
    cycle = overhead + calls * est
    n_samples = min(max(1, int(rep_ms / cycle)), max(1, max_samples))
    # Like Triton, warm up for ``warmup_ms`` of whole cycles (a per-call count could reach millions).
    n_warmup = min(max(1, int(warmup_ms / cycle)), max(1, max_samples))
    return RepeatPlan(n_warmup=n_warmup, n_samples=n_samples, calls_per_sample=calls, estimate_ms=est,
                      cycle_ms=cycle)
