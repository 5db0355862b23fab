"""The simulated device's single host<->device copy channel, for profiles whose copies serialise.

arXiv 2606.23969 found that under CC more streams add no copy bandwidth: crossings go through one
channel one at a time. The simulated device models that channel as a timeline, not a mutex: each copy
reserves the next free slot of its own length (its cost is known before it starts) and its thread
waits until that slot ends. A mutex made every waiting thread pay a wake-up on each hand-off (~50-100
us on a loaded VM), so four streams sharing the channel came out ~25% slower than one stream alone:
the simulated device's overhead, read as CC's. The GPU emulator keeps a lock: there the real copy runs
inside the channel and its length is not known in advance.
"""

from __future__ import annotations

import threading

__all__ = ["CopyChannel"]


class CopyChannel:
    """Slots on one shared timeline (``time.perf_counter`` seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free_at = 0.0

    def reserve(self, start: float, cost: float) -> float:
        """The start of a ``cost``-long slot beginning no earlier than ``start`` and after every slot
        reserved before it; the caller charges until ``begin + cost``."""
        with self._lock:
            begin = start if start >= self._free_at else self._free_at
            self._free_at = begin + cost
        return begin
