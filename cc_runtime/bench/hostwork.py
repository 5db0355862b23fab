"""A scheduler's per-step host work, as real Python that holds the GIL.

A sleep would release the GIL and so hide the one cost a worker thread adds to the scheduler thread:
contention for the interpreter. SGLang's scheduler spends its step in pure Python bookkeeping per request
(append the new token, check stop conditions, update counters, build the next batch's lists); this does
the same kind of work, sized in microseconds per request by a calibration taken once per process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def _bookkeep(reqs: list[dict], token: int) -> int:
    """One unit: what a scheduler does for each request in a step (dicts, lists, comparisons)."""
    done = 0
    for r in reqs:
        out = r["out"]
        out.append(token)
        r["n"] += 1
        if r["n"] >= r["max_new"] or token in r["stop"]:
            done += 1
        if len(out) > 64:
            del out[:32]
    return done


def _requests(n: int) -> list[dict]:
    return [{"out": [], "n": 0, "max_new": 1 << 30, "stop": {-1, -2}} for _ in range(n)]


_UNIT_REQS = 32


def _calibrate(target_s: float = 0.02) -> float:
    """Seconds per request-unit of :func:`_bookkeep`, the best of a few timed runs (noise only adds)."""
    reqs = _requests(_UNIT_REQS)
    rounds = 64
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(rounds):
            _bookkeep(reqs, i)
        dt = time.perf_counter() - t0
        best = min(best, dt / (rounds * _UNIT_REQS))
        if dt < target_s / 5:
            rounds *= 2
    return best


_SECONDS_PER_UNIT: float | None = None


def seconds_per_unit() -> float:
    global _SECONDS_PER_UNIT
    if _SECONDS_PER_UNIT is None:
        _SECONDS_PER_UNIT = _calibrate()
    return _SECONDS_PER_UNIT


@dataclass
class HostWork:
    """``base_us + us_per_request * batch`` of GIL-holding bookkeeping per :meth:`run`.

    The work is sized once (``units`` per call); on a loaded machine it then simply takes longer, as a
    real scheduler's Python would.
    """

    base_us: float
    us_per_request: float
    _pool: list[dict] = field(default_factory=list, repr=False)

    def units(self, batch: int) -> int:
        want_s = (self.base_us + self.us_per_request * batch) * 1e-6
        return max(0, round(want_s / seconds_per_unit()))

    def run(self, batch: int, token: int = 0) -> int:
        n = self.units(batch)
        if len(self._pool) < _UNIT_REQS:
            self._pool = _requests(_UNIT_REQS)
        done = 0
        full, rest = divmod(n, _UNIT_REQS)
        for i in range(full):
            done += _bookkeep(self._pool, token + i)
        if rest:
            done += _bookkeep(self._pool[:rest], token)
        return done
