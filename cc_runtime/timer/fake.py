"""A fake device clock for tests and the CPU benchmark: time moves only when work says so.

:class:`FakeClock` stands in for the GPU's %globaltimer register (and for the GPU itself: "running"
a kernel is ``clock.advance(ns)``). :class:`FakeTimer` stamps it with a chosen granularity and stamp
cost, so statistics, repeat sizing and overhead subtraction can be checked exactly on a CPU.
With ``corrupt`` it models CUDA events under CC instead: each ``elapsed_time`` reading goes through
the emulator's corruption (see ``cc_runtime.emulator.events.EventCorruption.corrupt``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .events import NS_PER_MS, StampArena, StampEvent


class FakeClock:
    def __init__(self, start_ns: int = 1_000_000_000) -> None:
        self._now = int(start_ns)
        self._lock = threading.Lock()

    @property
    def now_ns(self) -> int:
        return self._now

    def advance(self, ns: float) -> None:
        if ns < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._now += int(round(ns))

    def work(self, ms: float) -> Callable[[], None]:
        """A function that "runs a kernel" of ``ms`` milliseconds on this clock."""

        def kernel() -> None:
            self.advance(ms * NS_PER_MS)

        return kernel


class _CorruptedEvent(StampEvent):
    __slots__ = ()

    def elapsed_time(self, end_event: StampEvent) -> float:
        true_ms = super().elapsed_time(end_event)
        corrupt = self._arena._corrupt  # type: ignore[attr-defined]
        return float(corrupt(true_ms))


class FakeTimer(StampArena):
    """Stamps of a :class:`FakeClock`, quantized to ``granularity_ns``; each stamp costs ``stamp_cost_ns``.

    ``subtract_overhead`` follows the globaltimer backend (a stamp is a kernel) unless ``corrupt`` is
    given, in which case the timer plays CUDA events (no subtraction; readings corrupted).
    """

    name = "fake"

    def __init__(self, clock: FakeClock | None = None, granularity_ns: int = 32, stamp_cost_ns: int = 0,
                 corrupt: Callable[[float], float] | None = None, capacity: int = 32768,
                 name: str | None = None) -> None:
        super().__init__(capacity)
        if granularity_ns <= 0:
            raise ValueError("granularity_ns must be positive")
        self.clock = clock or FakeClock()
        self.granularity_ns = int(granularity_ns)
        self.stamp_cost_ns = int(stamp_cost_ns)
        self._corrupt = corrupt
        self._buf = [0] * capacity
        self.granularity_ms = self.granularity_ns / NS_PER_MS
        self.overhead_ms = self.stamp_cost_ns / NS_PER_MS
        if corrupt is not None:
            self.subtract_overhead = False
            self.name = name or "fake_cuda_event"
        elif name:
            self.name = name

    def event(self) -> StampEvent:
        return _CorruptedEvent(self) if self._corrupt is not None else StampEvent(self)

    def _write(self, slot: int, stream: Any) -> None:
        now = self.clock.now_ns
        self._buf[slot] = now - now % self.granularity_ns
        if self.stamp_cost_ns:
            self.clock.advance(self.stamp_cost_ns)

    def _read(self, lo: int, hi: int) -> list[int]:
        return self._buf[lo:hi]

    def spin(self, amount: int) -> None:
        self.clock.advance(amount)
