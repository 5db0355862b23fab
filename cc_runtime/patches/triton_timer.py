"""Triton's benchmark timer -> cc_runtime's CC-safe timer (%globaltimer).

Why: ``triton.testing.do_bench`` (used by every ``@triton.autotune`` through the driver's
``get_benchmarker``) times with CUDA events, which under CC can be wrong or negative; the Autotuner
keeps ``min`` over ``[median, p20, p80]`` lists and caches a near-random winner.
How: replace ``triton.testing.do_bench`` / ``do_bench_cudagraph`` (and stale ``from triton.testing
import do_bench`` copies) and ``CudaDriver.get_benchmarker`` with drop-ins of the same signature.
``Autotuner.do_bench`` is a ``functools.cached_property``: Autotuners that already benchmarked keep
what they cached; those holding Triton's own ``do_bench`` are switched, others (a custom
``do_bench=`` argument) are reported in a warning.
Upstream: none (Triton 3.4-3.9 have no CC awareness). Revert: exact, through PatchContext; Autotuners
that cached cc_runtime's ``do_bench`` while patched forget it and ask the restored driver again.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

from ..patching import Patch, PatchContext

log = logging.getLogger("cc_runtime.patches.triton_timer")


def _testing() -> Any:
    # The hook can fire while `triton` itself is still initialising (triton/__init__ imports testing):
    # take the finished submodule from sys.modules, not as an attribute of the package.
    return importlib.import_module("triton.testing")


def _upstream_has_it() -> str | None:
    import inspect

    try:
        src = inspect.getsource(_testing().do_bench)
    except (OSError, TypeError):
        return None
    return "triton.testing.do_bench already uses %globaltimer" if "globaltimer" in src else None


def _get_benchmarker(self: Any) -> Any:
    from ..timer import do_bench

    return do_bench


def _autotuners() -> list[Any]:
    """Autotuner objects reachable from module globals (where ``@triton.autotune`` leaves them)."""
    try:
        from triton.runtime.autotuner import Autotuner
    except ImportError:
        return []
    found: dict[int, Any] = {}
    for mod in list(sys.modules.values()):
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict):
            continue
        for value in list(d.values()):
            if issubclass(type(value), Autotuner):  # type(): isinstance may trip lazy-attribute shims
                found[id(value)] = value
    return list(found.values())


def switch_cached_autotuners(ctx: PatchContext, original_do_bench: Any) -> tuple[int, list[str]]:
    """Point Autotuners that cached Triton's own do_bench at ours; name the ones we cannot switch."""
    from ..timer import do_bench

    switched, stuck = 0, []
    for tuner in _autotuners():
        cached = tuner.__dict__.get("do_bench")
        if cached is None:
            continue  # not benchmarked yet: it will ask the (patched) driver
        if cached is original_do_bench:
            ctx.replace(tuner, "do_bench", do_bench)
            switched += 1
        elif cached is not do_bench and getattr(cached, "__module__", "") != "triton.runtime.autotuner":
            # (Triton's own lambdas for the deprecated warmup=/rep= arguments look up
            # triton.testing.do_bench at call time, so they already reach the patched one.)
            stuck.append(getattr(getattr(tuner, "base_fn", None), "__name__", repr(tuner)))
    if stuck:
        log.warning("cc_runtime: %d Triton autotuner(s) already cached a custom benchmarker and keep CUDA-event "
                    "timing under CC: %s (pass do_bench=cc_runtime.timer.do_bench to @triton.autotune)",
                    len(stuck), ", ".join(sorted(stuck)[:10]))
    return switched, stuck


def _forget_cc_benchmarker() -> None:
    """On revert: Autotuners that first benchmarked while patched cached cc_runtime's do_bench; drop
    that cached value so they ask the (restored) driver again, as if never patched."""
    from ..timer import do_bench

    for tuner in _autotuners():
        if tuner.__dict__.get("do_bench") is do_bench:
            del tuner.__dict__["do_bench"]


def _apply(ctx: PatchContext) -> None:
    tt = _testing()

    from ..timer import do_bench, do_bench_cudagraph

    original = ctx.replace(tt, "do_bench", do_bench, rebind=True)
    ctx.replace(tt, "do_bench_cudagraph", do_bench_cudagraph, rebind=True)
    try:
        from triton.backends.nvidia.driver import CudaDriver
    except ImportError as exc:  # a Triton without the NVIDIA backend has nothing to fix under CC
        log.info("cc_runtime: Triton NVIDIA driver not importable (%s); patched triton.testing only", exc)
    else:
        ctx.replace(CudaDriver, "get_benchmarker", _get_benchmarker)
    ctx.on_revert(_forget_cc_benchmarker)
    switched, _ = switch_cached_autotuners(ctx, original)
    if switched:
        log.info("cc_runtime: switched %d already-tuned Triton autotuner(s) to the CC-safe timer", switched)


PATCHES = [
    Patch(
        name="triton.autotune_timer",
        target="triton",
        versions=">=3.4,<3.10",
        summary="triton.testing.do_bench/do_bench_cudagraph and CudaDriver.get_benchmarker time with %globaltimer",
        upstream="none: Triton times @triton.autotune with CUDA events (no CC awareness through 3.9)",
        apply=_apply,
        module="triton.testing",
        upstream_has_it=_upstream_has_it,
        why="CUDA event timings are unreliable under CC, so @triton.autotune caches near-random configs",
    ),
]
