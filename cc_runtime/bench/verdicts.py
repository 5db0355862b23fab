"""A goal's verdict from a measured spread, so that identical runs on a busy machine agree.

Judging a median flips when the median sits near the threshold: on a 2-core VM shared with other work
the same benchmark read 0.939 (missed) and 1.01 (met) against 0.95 on two identical runs. A verdict
here takes the whole spread (min to max over the run's repetitions):

* ``met``: every repetition is on the right side of the threshold;
* ``MISSED``: every repetition is on the wrong side;
* ``inconclusive (noise)``: the spread straddles the threshold; the spread is shown beside it, and a
  rerun on a quieter machine (or more repetitions) decides.

A single value (a count, or a spread of one repetition) can only be met or MISSED. ``n/a``: the run did
not produce the key.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

MET, MISSED, INCONCLUSIVE, NA = "met", "MISSED", "inconclusive (noise)", "n/a"

OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le, "==": operator.eq}


def bounds(value: Any) -> tuple[float, float] | None:
    """(lowest, highest) a summary value was measured at: a spread's min and max, a plain number twice."""
    if isinstance(value, dict):
        if "min" in value and "max" in value:
            return float(value["min"]), float(value["max"])
        value = value.get("median", value.get("value"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), float(value)
    return None


def verdict(value: Any, op: str, target: float) -> str:
    """met / MISSED / inconclusive (noise) / n/a for ``value op target`` (see the module docstring)."""
    b = bounds(value)
    if b is None:
        return NA
    lo, hi = b
    if lo != lo or hi != hi:  # nan: nothing was measured
        return NA
    check = OPS[op]
    if check(lo, target) and check(hi, target):
        if op == "==" and lo != hi:
            return INCONCLUSIVE
        return MET
    if op == "==":
        return MISSED if not (lo <= target <= hi) else INCONCLUSIVE
    if not check(lo, target) and not check(hi, target):
        return MISSED
    return INCONCLUSIVE


def any_missed(verdicts: list[dict[str, str]]) -> bool:
    return any(v.get("result") == MISSED for v in verdicts)
