"""Prefill and mixed batches on CUDA graphs in SGLang under CC, with CC-appropriate capture sizes.

Why: under CC every eager kernel launch costs about twice as much (+5 us on H100), and prefill / mixed
batches are where SGLang still launches eagerly when its prefill graphs are off. Graph replays pay the
CC cost once per graph instead of once per kernel.

SGLang 0.5.12 (torch.compile piecewise runner, ``--enforce-/--disable-piecewise-cuda-graph``):
``ServerArgs._handle_piecewise_cuda_graph`` turns the runner off for every multimodal architecture,
including Qwen3.5 (the model of NVIDIA's CC benchmark), although the runner carries its own
multimodal support (static ``input_embeds``/``mrope_positions`` buffers, language model captured only),
Qwen3.5's gated-delta-net layers are a registered split op (``radix_linear_attention.py``) and
``qwen3_5.py`` adapts its dual-stream threshold for the piecewise runner. Under CC we re-enable it when
"multimodal" is the *only* reason upstream's own rules give (they are re-run with the model seen as a
text model, so every other exclusion keeps its effect). Kept exclusions, with upstream's reasons:
disabled architectures (DeepSeek V3.2/V4, Qwen3-Next, GLM MoE DSA, Bailing V2.5, LLaDA), DP attention,
torch.compile, pipeline parallelism, non-CUDA platforms, MoE all-to-all backends, LoRA, GGUF, diffusion
LLMs, CPU offload / hierarchical cache, deterministic inference, PD disaggregation, symmetric memory,
EPLB / expert recorder, context parallelism, --debug-cuda-graph, an explicit --disable, and the later
flashinfer_trtllm/mxfp4 MoE-runner rule: each involves host syncs, cross-rank shape agreement or
per-request state that the torch.compile runner does not capture (or an explicit user choice).

SGLang 0.5.23 (``--cuda-graph-backend-prefill {full,breakable,disabled}``, breakable by default on
CUDA, mixed batches replay too): the only exclusion that is a performance policy rather than a
correctness rule is pipeline parallelism ("opt-in: large buckets can be slower than eager"). Under CC
small prefills are launch-bound, so we opt in to breakable for PP and re-run upstream's breakable
compatibility rules afterwards. Multimodal stays excluded there ("Multimodal prefill replay faults
under BCG"), as do KDA, DeepSeek V4, CP, DCP, two-batch overlap and unvalidated a2a backends.

Sizes (both versions), unless the user chose them: captured token counts above
``CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS`` (default 4096) are dropped from upstream's own list. Upstream's default maximum
is the chunked-prefill size (8192-16384 on H100/H200). Beyond ~4k tokens a forward is compute-bound
even with CC's launch costs (e.g. an 8B layer: ~15 launches x ~10 us vs ~2.5 ms of GEMMs at 4096
tokens), while capture under CC was reported ~6x slower and every size costs a graph set and pool
memory. Below the cap upstream's dense buckets stay as they are.

Why not cc_runtime's own runner (:mod:`cc_runtime.graphs`) for the cases upstream cannot graph
(multimodal on 0.5.23, LoRA, DP attention): SGLang's models are not torch.fx-traceable as a whole
(forward batches, custom ops with Python-side metadata), and wiring our runner into ``ModelRunner``
needs SGLang's attention and MoE ops as split ops plus static ``ForwardBatch`` buffers: that cannot be
validated without a GPU and a real model, so this patch does not do it.

Upstream fix that would retire this: a CC-aware default in SGLang's server-args resolution (none open).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from ..patching import Patch, PatchContext

log = logging.getLogger("cc_runtime.patches.sglang_prefill_graphs")

CC_PREFILL_GRAPH_MAX_TOKENS = 4096  # default of CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS


def _max_tokens() -> int:
    from ..settings import SettingsError, get

    try:
        return int(get("CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS"))
    except SettingsError as exc:
        log.error("cc_runtime: %s; using %d", exc, CC_PREFILL_GRAPH_MAX_TOKENS)
        return CC_PREFILL_GRAPH_MAX_TOKENS


SOURCE = "cc_runtime.sglang_prefill_graphs"  # who declared a resolution, in SGLang 0.5.23's records


def _cap_sizes(sizes: list[int] | None, cap: int) -> list[int] | None:
    if not sizes:
        return sizes
    kept = [s for s in sizes if s <= cap]
    return kept or [min(sizes)]


# ---------------------------------------------------------------------------------------------------
# SGLang 0.5.12: torch.compile piecewise runner
# ---------------------------------------------------------------------------------------------------
class _TextModelView:
    """The real ModelConfig, seen as a text model (to ask upstream what else would disable PCG)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        if name == "is_multimodal":
            return False
        return getattr(self._real, name)


def _enforce_piecewise_0_5_12(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    was_disabled = bool(instance.disable_piecewise_cuda_graph)
    result = wrapped(*args, **kwargs)
    if was_disabled or not instance.disable_piecewise_cuda_graph or instance.enforce_piecewise_cuda_graph:
        return result  # the user (or the platform) turned it off, or upstream kept it on
    try:
        model_config = instance.get_model_config()
        if not getattr(model_config, "is_multimodal", False):
            return result
        # Ask upstream's own rules again with the model seen as a text model (get_model_config
        # returns the cached ``model_config``); every other exclusion keeps its effect.
        had_cached = "model_config" in vars(instance)
        instance.model_config = _TextModelView(model_config)
        instance.disable_piecewise_cuda_graph = False
        try:
            wrapped(*args, **kwargs)
            other_rule = bool(instance.disable_piecewise_cuda_graph)
        finally:
            if had_cached:
                instance.model_config = model_config
            else:
                del instance.model_config
            instance.disable_piecewise_cuda_graph = True
        if other_rule:
            log.info("cc_runtime: piecewise CUDA graph stays off: a rule besides 'multimodal' applies")
            return result
        instance.disable_piecewise_cuda_graph = False
        log.info("cc_runtime: CC on: piecewise CUDA graph re-enabled for multimodal %s (upstream disables it "
                 "for every multimodal model; its runner captures the language model)",
                 getattr(getattr(model_config, "hf_config", None), "architectures", "?"))
    except Exception as exc:  # noqa: BLE001 - never break server start-up: keep upstream's decision
        log.warning("cc_runtime: could not evaluate piecewise CUDA graph under CC (%s); keeping upstream's "
                    "decision", exc)
    return result


def _cc_sizes_0_5_12(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    user_max = instance.piecewise_cuda_graph_max_tokens
    user_tokens = instance.piecewise_cuda_graph_tokens
    result = wrapped(*args, **kwargs)
    try:
        if instance.disable_piecewise_cuda_graph or user_max is not None or user_tokens is not None:
            return result
        current = instance.piecewise_cuda_graph_max_tokens
        cap = _max_tokens()
        if current is not None and current > cap:
            instance.piecewise_cuda_graph_max_tokens = cap
            instance.piecewise_cuda_graph_tokens = _cap_sizes(instance.piecewise_cuda_graph_tokens, cap)
            log.info("cc_runtime: CC on: piecewise CUDA graph max tokens %d -> %d (%d sizes)", current,
                     cap, len(instance.piecewise_cuda_graph_tokens or ()))
    except Exception as exc:  # noqa: BLE001
        log.warning("cc_runtime: could not set CC piecewise CUDA graph sizes (%s)", exc)
    return result


def _apply_0_5_12(ctx: PatchContext) -> None:
    from sglang.srt.server_args import ServerArgs

    for name in ("_handle_piecewise_cuda_graph", "_handle_gpu_memory_settings", "get_model_config"):
        if not callable(getattr(ServerArgs, name, None)):
            raise RuntimeError(f"ServerArgs.{name} not found: this SGLang resolves server args differently")
    ctx.wrap(ServerArgs, "_handle_piecewise_cuda_graph", _enforce_piecewise_0_5_12)
    ctx.wrap(ServerArgs, "_handle_gpu_memory_settings", _cc_sizes_0_5_12)


def prefill_path_0_5_12(server_args: Any) -> dict[str, Any]:
    """Which prefill path a resolved 0.5.12 ServerArgs takes: ``piecewise`` or ``eager``."""
    on = not server_args.disable_piecewise_cuda_graph
    tokens = list(server_args.piecewise_cuda_graph_tokens or ()) if on else []
    return {"runner": "piecewise" if on else "eager",
            "max_tokens": server_args.piecewise_cuda_graph_max_tokens if on else None,
            "sizes": len(tokens), "largest": max(tokens) if tokens else None}


# ---------------------------------------------------------------------------------------------------
# SGLang 0.5.23: breakable / full prefill CUDA graphs (cuda_graph_config)
# ---------------------------------------------------------------------------------------------------
def _hooks_0_5_23() -> Any:
    return sys.modules["sglang.srt.arg_groups.cuda_graph_hook"]


def _prefill_config(server_args: Any) -> Any:
    return _hooks_0_5_23().resolving_view(server_args).cuda_graph_config.prefill


def _pp_opt_in_0_5_23(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    server_args = args[0] if args else kwargs["server_args"]
    hooks = _hooks_0_5_23()
    try:
        before = _prefill_config(server_args).backend
    except Exception:  # noqa: BLE001
        before = None
    result = wrapped(*args, **kwargs)
    try:
        phase, backend = hooks.Phase, hooks.Backend
        if (phase.PREFILL, "backend") in getattr(server_args, "_cuda_graph_config_locked", set()):
            return result  # the user chose the prefill backend: upstream skips its cascade, so do we
        cfg = hooks.resolving_view(server_args)
        if cfg.pp_size > 1 and before == backend.BREAKABLE and cfg.cuda_graph_config.prefill.backend == \
                backend.DISABLED:
            hooks.declare_resolution(server_args, SOURCE, cuda_graph_config=hooks.with_phase(
                cfg.cuda_graph_config, phase.PREFILL, backend=backend.BREAKABLE))
            hooks.disable_breakable_cudagraph_if_incompatible(server_args)  # correctness rules still apply
            if _prefill_config(server_args).backend == backend.BREAKABLE:
                log.info("cc_runtime: CC on: breakable prefill CUDA graph enabled for pipeline parallelism "
                         "(upstream: opt-in for performance; under CC small prefills are launch-bound)")
    except Exception as exc:  # noqa: BLE001 - never break server start-up
        log.warning("cc_runtime: could not evaluate prefill CUDA graph under CC (%s); keeping upstream's "
                    "decision", exc)
    return result


def _cc_sizes_0_5_23(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    server_args = args[0] if args else kwargs["server_args"]
    hooks = _hooks_0_5_23()
    locked = set(getattr(server_args, "_cuda_graph_config_locked", set()) or ())
    result = wrapped(*args, **kwargs)
    try:
        phase, backend = hooks.Phase, hooks.Backend
        if {(phase.PREFILL, "max_bs"), (phase.PREFILL, "bs")} & locked:
            return result
        cfg = hooks.resolving_view(server_args)
        prefill = cfg.cuda_graph_config.prefill
        if prefill.backend == backend.DISABLED or prefill.max_bs is None:
            return result
        cap = _max_tokens()
        if prefill.max_bs > cap:
            sizes = _cap_sizes(list(prefill.bs) if prefill.bs else None, cap)
            new_max = max(sizes) if sizes else cap
            hooks.declare_resolution(server_args, SOURCE, cuda_graph_config=hooks.with_phase(
                cfg.cuda_graph_config, phase.PREFILL, max_bs=new_max, bs=sizes))
            log.info("cc_runtime: CC on: prefill CUDA graph max tokens %d -> %d (%d sizes)", prefill.max_bs,
                     new_max, len(sizes or ()))
    except Exception as exc:  # noqa: BLE001
        log.warning("cc_runtime: could not set CC prefill CUDA graph sizes (%s)", exc)
    return result


def _apply_0_5_23(ctx: PatchContext) -> None:
    import importlib

    hooks = importlib.import_module("sglang.srt.arg_groups.cuda_graph_hook")
    memory = importlib.import_module("sglang.srt.arg_groups.memory_hook")
    for owner, name in ((hooks, "apply_cuda_graph_compatibility"), (hooks, "disable_breakable_cudagraph_if_incompatible"),
                        (hooks, "declare_resolution"), (hooks, "with_phase"), (hooks, "resolving_view"),
                        (memory, "handle_gpu_memory_settings")):
        if not callable(getattr(owner, name, None)):
            raise RuntimeError(f"{owner.__name__}.{name} not found: this SGLang resolves CUDA graphs differently")
    ctx.wrap(hooks, "apply_cuda_graph_compatibility", _pp_opt_in_0_5_23)
    ctx.wrap(memory, "handle_gpu_memory_settings", _cc_sizes_0_5_23)


def prefill_path_0_5_23(server_args: Any) -> dict[str, Any]:
    """Which prefill path 0.5.23 takes after resolution: ``breakable``, ``full`` or ``disabled``."""
    prefill = _prefill_config(server_args)
    sizes = list(prefill.bs or ())
    on = prefill.backend != "disabled"
    return {"runner": prefill.backend, "max_tokens": prefill.max_bs if on else None,
            "sizes": len(sizes) if on else 0, "largest": max(sizes) if on and sizes else None}


PATCHES = [
    Patch(
        name="sglang.prefill_graphs_0_5_12",
        target="sglang",
        versions=">=0.5.12,<0.5.13",
        summary="piecewise prefill CUDA graphs for multimodal models (e.g. Qwen3.5) under CC; max 4096 tokens",
        upstream="server_args._handle_piecewise_cuda_graph disables PCG for every multimodal model",
        module="sglang.srt.server_args",
        apply=_apply_0_5_12,
        why="under CC each eager launch costs ~2x; prefill/mixed batches of multimodal models ran eagerly",
    ),
    Patch(
        name="sglang.prefill_graphs_0_5_23",
        target="sglang",
        versions=">=0.5.23,<0.5.24",
        summary="breakable prefill CUDA graphs also with pipeline parallelism under CC; max 4096 tokens",
        upstream="breakable prefill graphs default on CUDA since 0.5.15; PP is opt-in (performance policy)",
        module="sglang.srt.arg_groups.cuda_graph_hook",
        apply=_apply_0_5_23,
        why="under CC small prefills are launch-bound, so PP's eager default costs more; capture is ~6x slower",
    ),
]
