"""The CC emulator's own cost per op, for ``cc-runtime bench emulator`` (``hook_overhead_us_per_op``).

The emulator charges CC's extra launch cost from a ``TorchDispatchMode`` that sees every op; that mode
costs time of its own on every op, charged or not. :func:`cc_runtime.emulator.install` measures it once
and subtracts it from each launch charge (``Emulator.launch``), so the hook's cost is not counted twice
as CC cost. This module measures the same quantity several times in the benchmark's run, so its spread
is reported beside the fidelity figures: a large or noisy value says how far the compensation can be
off. Measured on host tensors (nothing charged), the mode pushed on top of whatever the thread has.
"""

from __future__ import annotations

from typing import Any

from .common import spread

KEY = "hook_overhead_us_per_op"


def measure_hook_overhead(em: Any, repeats: int = 7) -> list[float]:
    """Seconds per op that one launch-cost mode adds, ``repeats`` times (each best of 3 x 300 ops)."""
    from ..emulator.dispatch_mode import calibrate_hook_overhead, make_mode_class

    mode_cls = make_mode_class()
    was = em.active
    em.active = True  # the mode takes its charging path only while the emulator is active
    try:
        return [calibrate_hook_overhead(em, mode_cls) for _ in range(repeats)]
    finally:
        em.active = was


def hook_overhead_summary(em: Any, repeats: int = 7) -> dict[str, Any]:
    """``{KEY: spread in microseconds}`` (the value the emulator compensates with, measured once at
    install, is the environment's ``launch_hook_overhead_us``)."""
    return {KEY: spread(s * 1e6 for s in measure_hook_overhead(em, repeats))}
