"""Spend an exact amount of wall time on the calling thread without holding the GIL for long.

The emulator charges CC's CPU-side costs (AES-GCM of the bounce buffer, encrypted submission) as a
calibrated wait rather than real AES-GCM through ``cryptography``: real AES runs at this CPU's speed
(3.4 GB/s per core with AES-NI, far less without), so the charged time would follow the machine
instead of the profile, and benchmarks would stop being comparable. Under real CC the blocked thread
sits inside a CUDA call that has released the GIL; so does this wait: it sleeps for the bulk and then
yields (``time.sleep(0)`` releases the GIL) until the deadline, so other Python threads keep running.
"""

from __future__ import annotations

import time

# Sleeping is only trusted this far ahead of the deadline (Linux timer slack is ~50-100 us).
_SLEEP_MARGIN_S = 200e-6


def wait_until(deadline: float) -> None:
    """Return once ``time.perf_counter() >= deadline``."""
    now = time.perf_counter()
    remaining = deadline - now
    if remaining > _SLEEP_MARGIN_S * 1.5:
        time.sleep(remaining - _SLEEP_MARGIN_S)
    while time.perf_counter() < deadline:
        time.sleep(0)


def wait_s(seconds: float) -> None:
    """Spend ``seconds`` of wall time (no-op for <= 0)."""
    if seconds > 0:
        wait_until(time.perf_counter() + seconds)
