"""FlashInfer's autotuner timer and CC detection under CC.

- FlashInfer < 0.6.16 (SGLang 0.5.12 pins 0.6.11.post1): ``AutoTuner._profile_single_kernel`` times
  each tactic with one CUDA event pair; the method is replaced whole by the same procedure on
  cc_runtime's timer (invalid readings disqualify the tactic instead of winning it).
- FlashInfer >= 0.6.16 has its own globaltimer path, chosen when the AutoTuner singleton is built
  (env switches exported by ``upstream_env``), but its stamp kernel is JIT-built with nvcc
  (``get_globaltimer_kernel``: without nvcc it falls back to events), an AutoTuner built before
  activation keeps events, and ``cold_l2_profile`` always uses events. cc_runtime supplies an
  nvcc-free stamp kernel, switches an existing singleton, and gives the autotuner module timing
  events that are globaltimer stamps.
- FlashInfer's ``is_confidential_compute`` checks only NVML ``ccFeature`` (misses protected-PCIe
  multi-GPU mode) and caches its first answer; cc_runtime's detection answers instead.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
from typing import Any

from ..patching import Patch, PatchContext

log = logging.getLogger("cc_runtime.patches.flashinfer_timer")


def _autotuner_module() -> Any:
    from flashinfer.autotuner import AutoTuner

    return sys.modules[AutoTuner.__module__]


def _stamp_fn() -> Any:
    """FlashInfer's stamp-kernel contract: ``fn(int64 CUDA tensor)`` writes %globaltimer into [0]."""
    from ..timer import get_timer

    timer = get_timer()
    return getattr(timer, "stamp_tensor", None)


# -- FlashInfer < 0.6.16: replace _profile_single_kernel ---------------------------------------------
_LEGACY_NEEDS = ("_prepare_input_tensors_with_batches", "_CUDA_GRAPH_DELAY_MICRO_SECS")


def _legacy_profile_single_kernel(self: Any, runner: Any, inputs: Any, tactic: Any, tuning_config: Any,
                                  **kwargs: Any) -> float:
    """FlashInfer 0.6.11's procedure (warmup, optional graph, delay kernel, one interval over ``repeat``
    calls), timed by cc_runtime's timer."""
    import torch

    from ..timer import get_timer
    from ..timer.stats import is_valid_interval

    fi = _autotuner_module()
    input_tensor_batches = self._prepare_input_tensors_with_batches(inputs, tuning_config)
    stream = torch.cuda.current_stream()
    timer = get_timer()
    repeat = self.repeat

    def run_kernels() -> None:
        for r in range(repeat):
            runner(input_tensor_batches[r % len(input_tensor_batches)], tactic=tactic, **kwargs)

    for _ in range(self.warmup):
        runner(input_tensor_batches[-1], tactic=tactic, **kwargs)

    start, end = timer.event(), timer.event()
    graph = torch.cuda.CUDAGraph() if tuning_config.use_cuda_graph else None
    with torch.cuda.stream(stream):
        if graph is not None:
            with torch.cuda.graph(graph):
                run_kernels()
        stream.synchronize()
        delay = self._CUDA_GRAPH_DELAY_MICRO_SECS if graph is not None else self.stream_delay_micro_secs
        fi.delay_kernel(delay)  # keeps host launch time out of the interval, as upstream does
        start.record(stream)
        if graph is not None:
            graph.replay()
        else:
            run_kernels()
        end.record(stream)
        stream.synchronize()
    elapsed = start.elapsed_time(end)
    avg_time = timer.without_overhead(elapsed) / repeat if is_valid_interval(elapsed) else math.inf
    fi.logger.debug(f"[Autotuner]: profiling {runner} {tactic} (cc_runtime {timer.name}), avg_time {avg_time}")
    return avg_time


def _legacy_upstream_has_it() -> str | None:
    from flashinfer.autotuner import AutoTuner

    try:
        src = inspect.getsource(AutoTuner)
    except (OSError, TypeError):
        return None
    return "this FlashInfer's AutoTuner already has a globaltimer path" if "globaltimer" in src else None


def _kernel_upstream_has_it() -> str | None:
    import flashinfer.utils as futils

    fn = getattr(futils, "get_globaltimer_kernel", None)
    try:
        src = inspect.getsource(fn) if fn is not None else ""
    except (OSError, TypeError):
        return None
    return ("FlashInfer's stamp kernel no longer needs a JIT build" if src and "load_inline" not in src
            else None)


def _apply_legacy(ctx: PatchContext) -> None:
    from flashinfer.autotuner import AutoTuner

    fi = _autotuner_module()
    missing = [a for a in _LEGACY_NEEDS if not hasattr(AutoTuner, a)]
    missing += [a for a in ("delay_kernel", "logger") if not hasattr(fi, a)]
    if missing:
        raise AttributeError(f"FlashInfer's autotuner changed shape (missing {', '.join(missing)})")
    params = list(inspect.signature(AutoTuner._profile_single_kernel).parameters)
    if params[:5] != ["self", "runner", "inputs", "tactic", "tuning_config"]:
        raise TypeError(f"unexpected _profile_single_kernel signature {params}")
    ctx.replace(AutoTuner, "_profile_single_kernel", _legacy_profile_single_kernel)


# -- FlashInfer >= 0.6.16: nvcc-free stamp kernel, existing singleton, cold-L2 events -----------------
def _cc_get_globaltimer_kernel() -> Any:
    """Drop-in for ``flashinfer.utils.get_globaltimer_kernel``: cc_runtime's PTX/Triton stamp kernel
    (no nvcc); None when no globaltimer works here (FlashInfer then uses events and says so)."""
    return _stamp_fn()


def _timer_setting() -> str:
    from .. import settings

    try:
        return str(settings.get("CC_RUNTIME_TIMER"))
    except settings.SettingsError:
        return "auto"


def _apply_globaltimer(ctx: PatchContext) -> None:
    import flashinfer.utils as futils
    from flashinfer.autotuner import AutoTuner

    if not hasattr(futils, "get_globaltimer_kernel"):
        raise AttributeError("flashinfer.utils.get_globaltimer_kernel not found")
    ctx.replace(futils, "get_globaltimer_kernel", _cc_get_globaltimer_kernel, rebind=True)
    tuner = AutoTuner.__dict__.get("_instance")
    if tuner is None:
        return  # built later: it reads FLASHINFER_AUTOTUNE_TIMER=globaltimer and calls our kernel getter
    if getattr(tuner, "_use_global_timer", False) and getattr(tuner, "_record_global_timer", None) is not None:
        return
    stamp = _stamp_fn()
    if stamp is None:
        log.warning("cc_runtime: FlashInfer's AutoTuner already exists with CUDA-event timing and no "
                    "globaltimer is available here; its tactic choices under CC may be unreliable")
        return
    ctx.replace(tuner, "_record_global_timer", stamp)
    ctx.replace(tuner, "_use_global_timer", True)
    log.info("cc_runtime: switched the existing FlashInfer AutoTuner to %%globaltimer")


class _CudaProxy:
    """``torch.cuda`` for one module, whose ``Event(enable_timing=True)`` is a cc_runtime timer event."""

    def __init__(self, cuda: Any) -> None:
        self.__dict__["_cuda"] = cuda

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cuda, name)

    def Event(self, enable_timing: bool = False, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - torch's name
        if enable_timing:
            from ..timer import get_timer

            return get_timer().event()
        return self._cuda.Event(enable_timing, *args, **kwargs)


class _TorchProxy:
    """``torch`` as seen by FlashInfer's autotuner module: everything forwarded but ``cuda.Event``."""

    def __init__(self, torch: Any) -> None:
        self.__dict__["_torch"] = torch
        self.__dict__["cuda"] = _CudaProxy(torch.cuda)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)


def _cold_l2_source() -> str:
    from flashinfer.autotuner import AutoTuner

    src = inspect.getsource(AutoTuner._profile_single_kernel)
    if "def cold_l2_profile" not in src:
        return ""
    start = src.index("def cold_l2_profile")
    end = src.find("def pure_profile", start)
    return src[start:end if end > start else None]


def _cold_l2_upstream_has_it() -> str | None:
    try:
        cold = _cold_l2_source()
    except (OSError, TypeError):
        return None
    if cold and "torch.cuda.Event(" not in cold:
        return "FlashInfer's cold_l2_profile no longer times with CUDA events"
    return None


def _apply_cold_l2(ctx: PatchContext) -> None:
    from flashinfer.autotuner import AutoTuner

    fi = _autotuner_module()
    if not _cold_l2_source():
        raise LookupError(f"{AutoTuner.__module__} has no cold_l2_profile; nothing to patch")
    torch = fi.torch
    if isinstance(torch, _TorchProxy):
        return
    # cold_l2_profile is a closure inside _profile_single_kernel: the only seam is the module's `torch`.
    ctx.replace(fi, "torch", _TorchProxy(torch))


def _wants_globaltimer(state: Any) -> bool:
    # FLASHINFER_AUTOTUNE_TIMER=cuda_event set by the user (upstream_env never overwrites it) is a choice
    # FlashInfer's own AutoTuner honours: do not switch an existing tuner or its cold-L2 path behind it.
    user_choice = os.environ.get("FLASHINFER_AUTOTUNE_TIMER", "").lower()
    return bool(state.enabled) and _timer_setting() != "cuda_event" and user_choice != "cuda_event"


# -- detection gap ------------------------------------------------------------------------------------
def _cc_is_confidential_compute() -> bool:
    """FlashInfer's contract (``FLASHINFER_CONFIDENTIAL_COMPUTE`` 0|1 wins, else detect), with cc_runtime's
    detection: protected-PCIe mode, forced and emulated CC count as CC."""
    forced = os.environ.get("FLASHINFER_CONFIDENTIAL_COMPUTE")
    if forced is not None:
        if forced not in ("0", "1"):
            raise ValueError(f"FLASHINFER_CONFIDENTIAL_COMPUTE must be '0' or '1', got {forced!r}")
        return forced == "1"
    from ..detect import cc_state

    return bool(cc_state().enabled)


_cc_is_confidential_compute.cache_clear = lambda: None  # type: ignore[attr-defined]  # lru_cache API kept


def _detect_upstream_has_it() -> str | None:
    import flashinfer.utils as futils

    fn = getattr(futils, "is_confidential_compute", None)
    if fn is None:
        return None
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    return "FlashInfer's is_confidential_compute already reads multiGpuMode" if "multiGpuMode" in src else None


def _apply_detect(ctx: PatchContext) -> None:
    import flashinfer.utils as futils

    original = futils.is_confidential_compute
    clear = getattr(original, "cache_clear", None)
    ctx.replace(futils, "is_confidential_compute", _cc_is_confidential_compute, rebind=True)
    if clear is not None:
        clear()  # an answer cached before activation must not survive...
        ctx.on_revert(clear)  # ...nor one cached while we were in charge


PATCHES = [
    Patch(
        name="flashinfer.autotuner_timer_legacy",
        target="flashinfer-python",
        versions=">=0.6.11,<0.6.16",
        summary="AutoTuner._profile_single_kernel timed by %globaltimer (replaced whole)",
        upstream="FlashInfer PR 3638/3870 (globaltimer autotuning under CC)",
        fixed_in="flashinfer-python 0.6.16",
        apply=_apply_legacy,
        module="flashinfer.autotuner",
        upstream_has_it=_legacy_upstream_has_it,
        why="0.6.11.post1 (SGLang 0.5.12's pin) times tactics with one CUDA event pair: random picks under CC",
    ),
    Patch(
        name="flashinfer.globaltimer_kernel",
        target="flashinfer-python",
        versions=">=0.6.16",
        summary="nvcc-free %globaltimer stamp kernel for FlashInfer's AutoTuner; an existing AutoTuner is switched",
        upstream="FlashInfer PR 3870 (JIT-built stamp kernel, needs nvcc; read at AutoTuner construction)",
        apply=_apply_globaltimer,
        module="flashinfer.autotuner",
        upstream_has_it=_kernel_upstream_has_it,
        when=_wants_globaltimer,
        why="without nvcc, or with an AutoTuner built before activation, FlashInfer keeps CUDA events under CC",
    ),
    Patch(
        name="flashinfer.cold_l2_timer",
        target="flashinfer-python",
        versions=">=0.6.16",
        summary="cold_l2_profile (and any event timing in the autotuner module) uses globaltimer events",
        upstream="none: FlashInfer 0.7.2's cold_l2_profile and CUPTI fallback still time with CUDA events",
        apply=_apply_cold_l2,
        module="flashinfer.autotuner",
        upstream_has_it=_cold_l2_upstream_has_it,
        when=_wants_globaltimer,
        why="cold-L2 tuning keeps the median of event readings, which CC corrupts",
    ),
    Patch(
        name="flashinfer.cc_detect",
        target="flashinfer-python",
        versions=">=0.6.16",
        summary="is_confidential_compute answers with cc_runtime's detection (protected PCIe, forced, emulated)",
        upstream="FlashInfer 0.7.2 checks NVML ccFeature only and caches the first answer",
        apply=_apply_detect,
        module="flashinfer.utils",
        upstream_has_it=_detect_upstream_has_it,
        why="protected-PCIe multi-GPU CC machines are missed, so FlashInfer stays on its CC-off paths",
    ),
]
