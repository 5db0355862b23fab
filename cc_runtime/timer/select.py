"""Which timer to use: ``CC_RUNTIME_TIMER`` (auto|globaltimer|cuda_event), then what works.

auto / globaltimer: the PTX stamp kernel through cuda-python, else the Triton stamp kernel, each
accepted only after its self-test; else CUDA events with a warning (under CC their readings can be
wrong or negative). Without CUDA: the CPU wall clock. One timer per device, built on first use.
Tests and benchmarks can pin a timer with :func:`use_timer`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from .. import settings
from .events import CudaEventTimer, Timer, WallClockTimer, apply_self_test, run_self_test

log = logging.getLogger("cc_runtime.timer")

SPIN_SMALL_CYCLES = 20_000  # ~10 us at 2 GHz
SPIN_LARGE_CYCLES = 200_000  # ~100 us

_lock = threading.RLock()
_cache: dict[tuple[str, str], Timer] = {}
_override: list[Timer] = []
_failures: dict[tuple[str, str], list[str]] = {}


class GlobalTimerUnavailable(RuntimeError):
    pass


@contextlib.contextmanager
def use_timer(timer: Timer) -> Iterator[Timer]:
    """Make ``get_timer()`` return ``timer`` inside the block (tests, benchmarks)."""
    with _lock:
        _override.append(timer)
    try:
        yield timer
    finally:
        with _lock:
            _override.remove(timer)


def reset() -> None:
    """Forget built timers (tests)."""
    with _lock:
        _cache.clear()
        _failures.clear()


def failures() -> dict[str, list[str]]:
    """Why each globaltimer way was refused, per device: for ``doctor`` and the benchmark notes."""
    return {f"{dev}/{kind}": list(v) for (dev, kind), v in _failures.items()}


def _cuda_device_index(device: Any) -> int | None:
    try:
        import torch
    except Exception:  # noqa: BLE001
        return None
    try:
        if not torch.cuda.is_available():
            return None
        if device is None:
            return int(torch.cuda.current_device())
        dev = torch.device(device)
        if dev.type != "cuda":
            return None
        return int(dev.index) if dev.index is not None else int(torch.cuda.current_device())
    except Exception:  # noqa: BLE001
        return None


def get_timer(device: Any = None, kind: str | None = None) -> Timer:
    """The timer for ``device`` (default: the current CUDA device, else the CPU wall clock).

    ``kind``: auto | globaltimer | cuda_event (default ``CC_RUNTIME_TIMER``), or ``wall``.
    """
    with _lock:
        if _override:
            return _override[-1]
    index: int | None = None
    if kind != "wall":
        try:
            kind = settings.get("CC_RUNTIME_TIMER", kind)
        except settings.SettingsError as exc:
            log.error("cc_runtime: %s; using the automatic timer choice", exc)
            kind = "auto"
        index = _cuda_device_index(device)
    if index is None:
        key = ("cpu", "wall")
    else:
        key = (f"cuda:{index}", str(kind))
    with _lock:
        timer = _cache.get(key)
        if timer is None:
            timer = WallClockTimer() if index is None else _build_cuda_timer(index, str(kind))
            _cache[key] = timer
        return timer


def _build_cuda_timer(index: int, kind: str) -> Timer:
    if kind == "cuda_event":
        return CudaEventTimer(index)
    reasons: list[str] = []
    for make in (_driver_kernels, _triton_kernels):
        try:
            return build_globaltimer(index, make(index))
        except Exception as exc:  # noqa: BLE001 - try the next way, then fall back
            reasons.append(f"{make.__doc__}: {type(exc).__name__}: {exc}")
    _failures[(f"cuda:{index}", kind)] = reasons
    msg = ("cc_runtime: %globaltimer is unavailable on cuda:{} ({}); falling back to CUDA event timing, "
           "which under Confidential Computing can be wrong or negative").format(index, "; ".join(reasons))
    log.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return CudaEventTimer(index)


def _driver_kernels(index: int) -> Any:
    """cuda-python PTX"""
    from .cuda_driver import DriverStampKernels

    return DriverStampKernels(index)


def _triton_kernels(index: int) -> Any:
    """Triton globaltimer()"""
    from .triton_stamp import TritonStampKernels

    return TritonStampKernels(index)


def build_globaltimer(index: int, kernels: Any, **timer_kwargs: Any) -> Timer:
    """A globaltimer Timer over ``kernels``, accepted only if its self-test passes."""
    from .globaltimer import GlobalTimer

    timer = GlobalTimer(index, kernels, **timer_kwargs)
    try:
        gran_ns = timer.measure_granularity_ns()
    except Exception as exc:  # noqa: BLE001
        log.debug("cc_runtime: granularity kernel failed: %s", exc)
        gran_ns = None
    result = run_self_test(timer, SPIN_SMALL_CYCLES, SPIN_LARGE_CYCLES, granularity_ns=gran_ns)
    if not result.ok:
        raise GlobalTimerUnavailable("self-test failed: " + "; ".join(result.reasons))
    apply_self_test(timer, result)
    log.info("cc_runtime: globaltimer via %s on cuda:%d: granularity %.3g us, empty interval %.3g us",
             timer.backend, index, timer.granularity_ms * 1e3, timer.overhead_ms * 1e3)
    return timer
