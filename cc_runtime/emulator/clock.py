"""Spend an exact amount of wall time on the calling thread without holding the GIL for long.

The emulator charges CC's CPU-side costs (AES-GCM of the bounce buffer, encrypted submission) as a
calibrated wait rather than real AES-GCM through ``cryptography``: real AES runs at this CPU's speed
(3.4 GB/s per core with AES-NI, far less without), so the charged time would follow the machine
instead of the profile, and benchmarks would stop being comparable. Under real CC the blocked thread
sits inside a CUDA call that has released the GIL; so does this wait: it sleeps for the bulk and then
yields (``os.sched_yield`` releases the GIL) until the deadline, so other Python threads keep running.

A thread that sleeps here first lowers its timer slack (Linux ``PR_SET_TIMERSLACK``, 50 us by default)
to 1 us, so a sleep wakes ~30 us late instead of ~90 us and the precision spin after it is short: a
simulated stream spending a 3 ms kernel then burns ~80 us of CPU, not ~200 us.

:func:`charge_until` / :func:`charge_s` are the same waits for a *cost charged to the calling thread*
(a CC copy's encryption, a launch's encrypted submission): they also add the thread CPU time the wait
took to a per-thread total (:func:`charged_cpu_s`), so a benchmark can report how much of a thread's
measured CPU was the emulated charge and how much was the caller's own work.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time

# sched_yield releases the GIL for ~1 us; time.sleep(0) would sleep for the timer slack (~50-80 us).
_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))

# Sleeping is only trusted this far ahead of the deadline: with a 1 us timer slack a 3 ms sleep wakes
# ~30 us late at the median and ~50 us at p90 on a loaded 2-core VM; the default slack adds ~60 us.
_SLEEP_MARGIN_S = 80e-6
_SLEEP_MARGIN_DEFAULT_SLACK_S = 200e-6
# Waits shorter than this spin holding the GIL: yielding would hand the GIL to a busy thread and come
# back late (GIL hand-off costs more than the wait); other threads lose at most this much.
_SPIN_ONLY_S = 20e-6
# The last stretch of a longer wait spins holding the GIL: one GIL release can take ~7 us (p90) on a
# loaded VM, so releasing closer to the deadline would overshoot it.
_FINAL_SPIN_S = 10e-6


def _release_gil() -> None:
    time.sleep(0)

_PR_SET_TIMERSLACK = 29
_local = threading.local()
_prctl = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no libc symbol: keep the default slack and the wide margin
        _prctl = None


def _sleep_margin() -> float:
    """This thread's margin; the first call lowers its timer slack (per thread, so once per thread)."""
    margin = getattr(_local, "margin", None)
    if margin is None:
        margin = _SLEEP_MARGIN_DEFAULT_SLACK_S
        if _prctl is not None:
            try:
                if _prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0) == 0:  # 1 us, in ns
                    margin = _SLEEP_MARGIN_S
            except Exception:  # noqa: BLE001,S110 - a libc without prctl: keep the wide margin
                pass
        _local.margin = margin
    return margin  # type: ignore[no-any-return]


def wait_until(deadline: float) -> None:
    """Return once ``time.perf_counter() >= deadline``."""
    now = time.perf_counter()
    remaining = deadline - now
    if remaining < _SPIN_ONLY_S:
        while time.perf_counter() < deadline:
            pass
        return
    margin = _sleep_margin()
    if remaining > margin * 1.5:
        time.sleep(remaining - margin)
    # Release the GIL until shortly before the deadline, then spin the rest holding it. With this
    # thread's timer slack lowered, a zero sleep releases the GIL for ~1-7 us and wakes as a sleeper
    # does; sched_yield queues the thread behind every other runnable process, which on a loaded
    # 2-core machine cost single waits 20 ms and made 20-50 us charges miss by milliseconds.
    release = _release_gil if margin == _SLEEP_MARGIN_S else _yield
    spin_from = deadline - _FINAL_SPIN_S
    while time.perf_counter() < spin_from:
        release()
    while time.perf_counter() < deadline:
        pass


def wait_s(seconds: float) -> None:
    """Spend ``seconds`` of wall time (no-op for <= 0)."""
    if seconds > 0:
        wait_until(time.perf_counter() + seconds)


# -- charges: waits that stand for CPU work CC makes the calling thread do -------------------------
_charged: dict[int, float] = {}  # thread ident -> CPU seconds spent in charges (written by that thread)


def _bookkeeping_s() -> float:
    """How long before a long charge's deadline its accounting must start.

    The accounting's ``thread_time`` read is a system call (~1.5 us in a VM: no vDSO for thread
    clocks). Read after the deadline it made every charge that long too long, so :func:`charge_until`
    reads it before the deadline. Measured once per process: twice the median read, plus 1 us for the
    dict update and a slow read."""
    global _BOOKKEEPING_S
    if _BOOKKEEPING_S is None:
        samples = []
        for _ in range(21):
            t0 = time.perf_counter()
            time.thread_time()
            samples.append(time.perf_counter() - t0)
        _BOOKKEEPING_S = 2.0 * sorted(samples)[10] + 1e-6
    return _BOOKKEEPING_S


_BOOKKEEPING_S: float | None = None


def charge_until(deadline: float) -> None:
    """:func:`wait_until`, counted as an emulated CC charge on this thread (see :func:`charged_cpu_s`).

    The accounting is done before the deadline, not after it (done after, it made every charge
    ~2-3 us too long). A charge shorter than the spin-only threshold is a spin holding the core, so
    its CPU is its wall time and no CPU clock is read. A longer one reads the thread's CPU clock,
    waits until shortly before the deadline, records the charge, then spins to the deadline and
    counts that last spin as CPU. What remains after the deadline is leaving the spin loop."""
    now = time.perf_counter()
    remaining = deadline - now
    if remaining <= 0:
        return
    ident = threading.get_ident()
    if remaining < _SPIN_ONLY_S:
        # Only the owning thread writes its entry; a reader on another thread sees a whole float.
        _charged[ident] = _charged.get(ident, 0.0) + remaining
        while time.perf_counter() < deadline:
            pass
        return
    cpu0 = time.thread_time()
    wait_until(deadline - _bookkeeping_s())
    used = time.thread_time() - cpu0
    _charged[ident] = _charged.get(ident, 0.0) + used + max(deadline - time.perf_counter(), 0.0)
    while time.perf_counter() < deadline:
        pass


def charge_s(seconds: float) -> None:
    """:func:`wait_s`, counted as an emulated CC charge on this thread."""
    if seconds > 0:
        charge_until(time.perf_counter() + seconds)


def charged_cpu_s(thread: threading.Thread | int | None = None) -> float:
    """CPU seconds ``thread`` (default: the calling one) has spent in :func:`charge_until` so far.

    Measured with ``time.thread_time`` around each charge, on the thread that pays it; read it twice
    and subtract to get a window. Thread idents are reused after a thread exits: read it while the
    thread is alive."""
    if thread is None:
        ident: int | None = threading.get_ident()
    elif isinstance(thread, int):
        ident = thread
    else:
        ident = thread.ident
    return _charged.get(ident, 0.0) if ident is not None else 0.0
