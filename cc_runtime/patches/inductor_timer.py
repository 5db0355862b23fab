"""torch inductor's benchmarker (max-autotune) -> cc_runtime's CC-safe timer.

Why: ``torch/_inductor/runtime/benchmarking.py`` times GPU candidates with CUDA event pairs
(``InductorBenchmarker.get_event_pairs``) and keeps the minimum (``get_event_pairs_min_timing``): under
CC one negative reading crowns a random candidate. ``TritonBenchmarker`` (the default benchmarker)
goes through Triton's ``do_bench`` (its ``triton_do_bench`` cached property).
How: ``get_event_pairs`` hands out globaltimer events with the same surface (``record()``,
``elapsed_time()``); ``get_event_pairs_min_timing`` ignores non-positive/NaN readings and removes the
stamp's own cost; ``TritonBenchmarker.triton_do_bench`` becomes a property returning cc_runtime's
``do_bench`` (a data descriptor, so it also wins over values already cached on instances, and revert
brings those back). Signatures: ``get_event_pairs(self, iters)`` (torch <= 2.12) and
``get_event_pairs(self, iters, device_type=None)`` (seen in 2.13 and 2.14.1) are both accepted.
Upstream: none (torch 2.14 still uses events).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..patching import Patch, PatchContext

log = logging.getLogger("cc_runtime.patches.inductor_timer")


def _device_type(b: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    device_type = kwargs.get("device_type", args[0] if args else None)
    if device_type is None:
        normalize = getattr(b, "_normalize_gpu_device_type", None)
        return str(normalize(None)) if normalize is not None else "cuda"
    if isinstance(device_type, str):
        import torch

        return torch.device(device_type).type
    return str(getattr(device_type, "type", device_type))


def min_valid_timing(event_pairs: list[tuple[Any, Any]]) -> float:
    """Minimum over readings that are positive and finite, less the stamp cost for stamp timers.

    No valid reading at all returns ``inf``: the candidate is skipped instead of winning with a
    negative time.
    """
    from ..timer.events import StampEvent
    from ..timer.stats import is_valid_interval

    readings = [start.elapsed_time(end) for start, end in event_pairs]
    ok = [r for r in readings if is_valid_interval(r)]
    if not ok:
        return math.inf
    best = min(ok)
    first = event_pairs[0][0]
    return first._arena.without_overhead(best) if isinstance(first, StampEvent) else best


def _upstream_has_it() -> str | None:
    import inspect

    from torch._inductor.runtime import benchmarking as b

    try:
        src = inspect.getsource(b.InductorBenchmarker)
    except (OSError, TypeError):
        return None
    return "torch inductor's benchmarker already uses %globaltimer" if "globaltimer" in src else None


def _apply(ctx: PatchContext) -> None:
    from torch._inductor.runtime import benchmarking as b

    from ..timer import do_bench, get_timer

    IB = b.InductorBenchmarker
    TB = b.TritonBenchmarker
    for owner, attr in ((IB, "get_event_pairs"), (IB, "get_event_pairs_min_timing"), (TB, "triton_do_bench")):
        if attr not in vars(owner):
            raise AttributeError(f"{owner.__name__}.{attr} not found: this torch's benchmarker changed shape")
    original_pairs = IB.get_event_pairs

    def get_event_pairs(self: Any, iters: int, *args: Any, **kwargs: Any) -> list[tuple[Any, Any]]:
        if _device_type(b, args, kwargs) != "cuda":
            return original_pairs(self, iters, *args, **kwargs)  # type: ignore[no-any-return]
        return get_timer().pairs(iters)

    def get_event_pairs_min_timing(self: Any, event_pairs: list[tuple[Any, Any]]) -> float:
        return min_valid_timing(event_pairs)

    ctx.replace(IB, "get_event_pairs", get_event_pairs)
    ctx.replace(IB, "get_event_pairs_min_timing", get_event_pairs_min_timing)
    ctx.replace(TB, "triton_do_bench", property(lambda self: do_bench,
                                                doc="cc_runtime: Triton-compatible do_bench on the CC-safe timer"))


PATCHES = [
    Patch(
        name="inductor.benchmarker_timer",
        target="torch",
        versions=">=2.9,<2.15",
        summary="inductor benchmarker: globaltimer event pairs, invalid readings ignored, Triton path via cc do_bench",
        upstream="none: torch inductor (2.9-2.14) times max-autotune candidates with CUDA events",
        apply=_apply,
        module="torch._inductor.runtime.benchmarking",
        upstream_has_it=_upstream_has_it,
        why="max-autotune keeps the minimum event timing; under CC one negative reading picks a random kernel",
    ),
]
