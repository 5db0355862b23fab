"""Spend an exact amount of wall time on the calling thread without holding the GIL for long.

The emulator charges CC's CPU-side costs (AES-GCM of the bounce buffer, encrypted submission) as a
calibrated wait rather than real AES-GCM through ``cryptography``: real AES runs at this CPU's speed
(3.4 GB/s per core with AES-NI, far less without), so the charged time would follow the machine
instead of the profile, and benchmarks would stop being comparable. Under real CC the blocked thread
sits inside a CUDA call that has released the GIL; so does this wait: it sleeps for the bulk and then
yields (``os.sched_yield`` releases the GIL) until the deadline, so other Python threads keep running.
"""

from __future__ import annotations

import os
import time

# sched_yield releases the GIL for ~1 us; time.sleep(0) would sleep for the timer slack (~50-80 us).
_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))

# Sleeping is only trusted this far ahead of the deadline (Linux timer slack is ~50-100 us).
_SLEEP_MARGIN_S = 200e-6
# Waits shorter than this spin holding the GIL: yielding would hand the GIL to a busy thread and come
# back late (GIL hand-off costs more than the wait); other threads lose at most this much.
_SPIN_ONLY_S = 20e-6


def wait_until(deadline: float) -> None:
    """Return once ``time.perf_counter() >= deadline``."""
    now = time.perf_counter()
    remaining = deadline - now
    if remaining > _SLEEP_MARGIN_S * 1.5:
        time.sleep(remaining - _SLEEP_MARGIN_S)
    if remaining < _SPIN_ONLY_S:
        while time.perf_counter() < deadline:
            pass
        return
    while time.perf_counter() < deadline:
        _yield()


def wait_s(seconds: float) -> None:
    """Spend ``seconds`` of wall time (no-op for <= 0)."""
    if seconds > 0:
        wait_until(time.perf_counter() + seconds)
