"""Timer objects with the ``torch.cuda.Event`` surface: ``record(stream)``, ``elapsed_time(other)``,
``synchronize()``, ``query()``.

A :class:`Timer` hands out events. Stamp timers (globaltimer, wall clock, fake clock) write one 64-bit
nanosecond stamp per ``record`` into a preallocated buffer (:class:`StampArena`); the first
``elapsed_time`` after new records reads every pending stamp back in one copy, because under CC each
device->host copy is an encrypted crossing that blocks the host. CUDA events are also offered (as the
fallback) through :class:`CudaEventTimer`.

Nothing here imports torch at module level.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("cc_runtime.timer")

NS_PER_MS = 1_000_000


class TimerError(RuntimeError):
    """An event was used in a way the timer cannot answer (not recorded, slot recycled, capture)."""


@dataclass
class SelfTest:
    """What the first-use self-test found. ``ok`` gates the use of a globaltimer backend."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    granularity_ms: float = math.nan
    overhead_ms: float = math.nan
    small_work_ms: float = math.nan
    large_work_ms: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reasons": list(self.reasons), "granularity_ms": self.granularity_ms,
                "overhead_ms": self.overhead_ms, "small_work_ms": self.small_work_ms,
                "large_work_ms": self.large_work_ms}


class Timer:
    """A source of events plus what is known about them.

    ``granularity_ms``: update step of the clock. ``overhead_ms``: median length of an empty interval
    (two records back to back); stamp timers subtract it from benchmark samples because a stamp is a
    kernel of its own, CUDA events do not (an event is a front-end marker, like Triton assumes).
    """

    name = "timer"
    subtract_overhead = False
    device = "cpu"

    def __init__(self) -> None:
        self.granularity_ms = 0.0
        self.overhead_ms = 0.0
        self.self_test: SelfTest | None = None

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def readbacks(self) -> int:
        return 0

    def event(self) -> Any:
        raise NotImplementedError

    def pairs(self, n: int) -> list[tuple[Any, Any]]:
        return [(self.event(), self.event()) for _ in range(n)]

    def without_overhead(self, ms: float) -> float:
        """A valid interval less one stamp's cost (stamp timers), floored at one tick: every interval
        loses the same offset, so their order is kept and none drops to zero or below."""
        if not self.subtract_overhead or not self.overhead_ms > 0:
            return ms
        return max(ms - self.overhead_ms, self.granularity_ms or 1e-6)

    def synchronize(self) -> None:
        """Wait for all work this timer may stamp (the device, for GPU timers)."""

    def l2_flusher(self) -> Callable[[], None]:
        """A callable that evicts the L2 cache before a sample (a no-op off the GPU)."""
        return _noop

    def spin(self, amount: int) -> None:
        """Enqueue ``amount`` units of busy work (self-test); unsupported by default."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"timer": self.name, "device": self.device, "granularity_ms": self.granularity_ms,
                "overhead_ms": self.overhead_ms,
                "self_test": self.self_test.as_dict() if self.self_test else None}


def _noop() -> None:
    return None


class StampEvent:
    """One slot in a :class:`StampArena`; mirrors ``torch.cuda.Event`` (timing always on)."""

    __slots__ = ("_arena", "_slot", "_gen")

    def __init__(self, arena: StampArena) -> None:
        self._arena = arena
        self._slot = -1
        self._gen = -1

    def record(self, stream: Any = None) -> None:
        self._arena._record(self, stream)

    def elapsed_time(self, end_event: StampEvent) -> float:
        """Milliseconds from this event to ``end_event`` (raw: may be 0 below the timer's granularity)."""
        if not isinstance(end_event, StampEvent) or end_event._arena is not self._arena:
            raise TimerError("elapsed_time needs two events of the same timer")
        start = self._arena._value_ns(self)
        end = self._arena._value_ns(end_event)
        return (end - start) / NS_PER_MS

    def synchronize(self) -> None:
        self._arena.synchronize()

    def query(self) -> bool:
        """True when the stamp is known on the host (asynchronous timers say False until read)."""
        return self._arena._is_read(self)

    @property
    def recorded(self) -> bool:
        return self._slot >= 0


class StampArena(Timer):
    """Slots in a preallocated stamp buffer, recycled as a ring; pending stamps read back in one copy.

    Subclasses implement ``_write(slot, stream)`` (enqueue one stamp) and ``_read(lo, hi)`` (wait, then
    copy slots ``lo..hi-1`` to the host, as integers in nanoseconds).
    """

    subtract_overhead = True

    def __init__(self, capacity: int = 32768) -> None:
        super().__init__()
        if capacity < 4:
            raise ValueError("capacity must be at least 4 slots")
        self.capacity = capacity
        self._lock = threading.RLock()
        self._cursor = 0
        self._gens = [0] * capacity
        self._host: list[int | None] = [None] * capacity
        self._pending_lo: int | None = None
        self._pending_hi = 0
        self._readbacks = 0

    # -- subclass interface ---------------------------------------------------------------------
    def _write(self, slot: int, stream: Any) -> None:
        raise NotImplementedError

    def _read(self, lo: int, hi: int) -> list[int]:
        raise NotImplementedError

    # -- Timer --------------------------------------------------------------------------------------
    @property
    def readbacks(self) -> int:
        return self._readbacks

    def event(self) -> StampEvent:
        return StampEvent(self)

    def _record(self, ev: StampEvent, stream: Any) -> None:
        with self._lock:
            slot = self._cursor
            self._cursor = (self._cursor + 1) % self.capacity
            self._gens[slot] += 1
            self._host[slot] = None
            self._write(slot, stream)
            ev._slot, ev._gen = slot, self._gens[slot]
            if self._pending_lo is None:
                self._pending_lo, self._pending_hi = slot, slot + 1
            else:
                self._pending_lo = min(self._pending_lo, slot)
                self._pending_hi = max(self._pending_hi, slot + 1)

    def _check(self, ev: StampEvent) -> None:
        if ev._slot < 0:
            raise TimerError("event was never recorded")
        if self._gens[ev._slot] != ev._gen:
            raise TimerError(f"event's stamp slot was reused ({self.capacity} records since): read it sooner")

    def _is_read(self, ev: StampEvent) -> bool:
        with self._lock:
            return ev._slot >= 0 and self._gens[ev._slot] == ev._gen and self._host[ev._slot] is not None

    def _value_ns(self, ev: StampEvent) -> int:
        with self._lock:
            self._check(ev)
            value = self._host[ev._slot]
            if value is None:
                self.readback()
                value = self._host[ev._slot]
            if value is None:  # pragma: no cover - _read broke its contract
                raise TimerError("stamp missing after readback")
            return value

    def readback(self) -> None:
        """Copy every pending stamp to the host in one transfer."""
        with self._lock:
            if self._pending_lo is None:
                return
            lo, hi = self._pending_lo, self._pending_hi
            values = self._read(lo, hi)
            self._readbacks += 1
            for i, v in enumerate(values):
                slot = lo + i
                if self._host[slot] is None:
                    self._host[slot] = int(v)
            self._pending_lo, self._pending_hi = None, 0


# -- CPU timers -------------------------------------------------------------------------------------
class WallClockTimer(StampArena):
    """``time.perf_counter_ns`` stamps, taken after ``sync()`` (e.g. a device synchronize) when given.

    Off the GPU this is the honest timer; on a GPU it is correct but each record costs a full sync.
    """

    name = "wall"
    subtract_overhead = False  # a host clock has no stamp kernel to subtract

    def __init__(self, sync: Callable[[], None] | None = None, capacity: int = 32768) -> None:
        super().__init__(capacity)
        self._sync = sync
        self._buf = [0] * capacity
        self.granularity_ms = _perf_counter_granularity_ns() / NS_PER_MS

    def _write(self, slot: int, stream: Any) -> None:
        if self._sync is not None:
            self._sync()
        self._buf[slot] = time.perf_counter_ns()

    def _read(self, lo: int, hi: int) -> list[int]:
        return self._buf[lo:hi]

    def synchronize(self) -> None:
        if self._sync is not None:
            self._sync()


def _perf_counter_granularity_ns(samples: int = 2000) -> float:
    best = math.inf
    prev = time.perf_counter_ns()
    for _ in range(samples):
        now = time.perf_counter_ns()
        if now != prev:
            best = min(best, now - prev)
            prev = now
    return best if math.isfinite(best) else 1000.0


class CudaEventTimer(Timer):
    """Plain ``torch.cuda.Event(enable_timing=True)``: the fallback. Under CC its readings can be wrong
    or negative; benchmarks reject non-positive intervals, but wrong positive ones pass."""

    name = "cuda_event"
    subtract_overhead = False

    def __init__(self, device_index: int) -> None:
        super().__init__()
        self.device_index = device_index
        self.device = f"cuda:{device_index}"
        self.granularity_ms = 0.0005  # CUDA documents ~0.5 us resolution for event timings
        self._flusher: Callable[[], None] | None = None

    def event(self) -> Any:
        import torch

        return torch.cuda.Event(enable_timing=True)

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize(self.device_index)

    def l2_flusher(self) -> Callable[[], None]:
        if self._flusher is None:
            self._flusher = cuda_l2_flusher(self.device_index)
        return self._flusher


def cuda_l2_flusher(device_index: int) -> Callable[[], None]:
    """Zero a 256 MiB buffer (Triton's flush: larger than any current L2) before each sample."""
    import torch

    buf = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.int, device=f"cuda:{device_index}")

    def flush() -> None:
        buf.zero_()

    return flush


# -- self-test ----------------------------------------------------------------------------------------
BUSY_FACTOR = 50  # x the large workload (~5 ms on a GPU): longer than enqueuing the self-test's stamps


def run_self_test(timer: Timer, small: int, large: int, granularity_ns: float | None = None,
                  empty_pairs: int = 16) -> SelfTest:
    """Monotonic stamps, more work -> larger delta; measures granularity and empty-interval cost.

    Uses ``timer.spin(amount)`` as the workload. ``granularity_ns`` comes from a dedicated kernel when
    the backend has one; else the smallest non-zero empty interval bounds it from above.
    """
    reasons: list[str] = []
    # A kernel's first launch may compile it (Triton's JIT) or load it (CUDA lazy module loading): host
    # time that would land between e0 and e1 below and make the small workload look the larger.
    timer.spin(small)
    # The stamp kernel too (Triton compiles it on first use): a first stamp inside the busy window below
    # would put its compile time between stamps that must run back to back.
    warm = timer.pairs(1)[0]
    warm[0].record()
    warm[1].record()
    timer.synchronize()
    chain = [timer.event() for _ in range(8)]
    empties = timer.pairs(empty_pairs)
    e0, e1, e2 = timer.event(), timer.event(), timer.event()
    # Keep the device busy while the stamps below are enqueued: they then run back to back, so an empty
    # interval is a stamp's device cost (what a sample of queued work contains), not the host's launch gap.
    timer.spin(BUSY_FACTOR * large)
    for ev in chain:
        ev.record()
    for s, e in empties:
        s.record()
        e.record()
    e0.record()
    timer.spin(small)
    e1.record()
    timer.spin(large)
    e2.record()
    timer.synchronize()
    try:
        steps = [a.elapsed_time(b) for a, b in zip(chain, chain[1:], strict=False)]
        empty_ms = [s.elapsed_time(e) for s, e in empties]
        small_ms, large_ms = e0.elapsed_time(e1), e1.elapsed_time(e2)
    except Exception as exc:  # noqa: BLE001 - a broken backend fails its self-test, it does not crash
        return SelfTest(False, [f"reading stamps failed: {type(exc).__name__}: {exc}"])
    if any(not math.isfinite(x) or x < 0 for x in steps + empty_ms):
        reasons.append("stamps are not monotonic")
    if not (math.isfinite(small_ms) and small_ms > 0):
        reasons.append(f"a busy kernel measured {small_ms} ms (expected > 0)")
    if not (math.isfinite(large_ms) and large_ms > small_ms):
        reasons.append(f"more work did not give a larger delta ({large_ms} ms vs {small_ms} ms)")
    positive = [x for x in empty_ms + steps if x > 0]
    if granularity_ns is not None and math.isfinite(granularity_ns) and granularity_ns > 0:
        gran_ms = granularity_ns / NS_PER_MS
    elif positive:
        gran_ms = min(positive)
    else:
        gran_ms = math.nan
        reasons.append("could not determine the timer's granularity")
    overhead = statistics.median(empty_ms) if empty_ms else math.nan
    return SelfTest(not reasons, reasons, gran_ms, max(overhead, 0.0) if math.isfinite(overhead) else math.nan,
                    small_ms, large_ms)


def apply_self_test(timer: Timer, result: SelfTest) -> None:
    timer.self_test = result
    if math.isfinite(result.granularity_ms):
        timer.granularity_ms = result.granularity_ms
    if math.isfinite(result.overhead_ms):
        timer.overhead_ms = result.overhead_ms
