"""SGLang's safetensors weight iterators under CC: device tensors from ``cc_runtime.loading``.

Why: SGLang's default load path yields one CPU tensor per checkpoint tensor, and each model's
``weight_loader`` copies it into its device parameter: under CC each copy is a pageable,
host-synchronous crossing through the encrypted bounce buffer that pays its fixed cost (~37 us on
H100 + TDX, ISPASS'25 artifact), one after another, tens of thousands of times for an MoE checkpoint
(arXiv 2606.23969 reports model loading 34x slower under CC on B300).

How: ``safetensors_weights_iterator``, ``multi_thread_safetensors_weights_iterator`` (0.5.12) and
``buffered_multi_thread_safetensors_weights_iterator`` in ``sglang.srt.model_loader.weight_utils``
are replaced (stale ``from ... import`` copies in ``loader.py`` rebound). When called from
``DefaultModelLoader._get_weights_iterator`` (the default ``--load-format auto/safetensors`` path, which
is also wrapped to mark that call), they yield the owned device tensors of
:class:`cc_runtime.loading.ChunkedLoader`: the checkpoint crosses in ``CC_RUNTIME_LOAD_CHUNK_MB``
chunks, and the models' ``weight_loader``s make device-to-device copies. Every other call goes to
upstream's iterator unchanged, with the reason logged once:

* the SGLang device is not CUDA (ROCm, NPU, XPU, CPU): not applicable, upstream;
* a loader other than ``DefaultModelLoader`` itself: ``LayeredModelLoader`` (layered loading),
  ``QuantizedRLModelLoader``, ``ModelOptModelLoader``, ``IncModelLoader``, ``PreshardedModelLoader``;
* loaders that do not use these iterators are untouched anyway: GGUF (``gguf_quant_weights_iterator``),
  bitsandbytes (``BitsAndBytesModelLoader`` calls ``safetensors_weights_iterator`` itself: upstream),
  remote loading (``RemoteModelLoader``, ``RemoteInstanceModelLoader``), ``fastsafetensors``,
  ``runai_streamer``, ``instanttensor``, ``.bin``/``.pt`` checkpoints, ``--load-format dummy``;
* a file that is not ``.safetensors``.
No ``weight_loader`` seen in the tests reads host memory from the yielded tensor (SGLang's
``default_weight_loader`` and the Llama / Qwen3-MoE loaders copy, narrow and view); one that does
(``.numpy()``, ``.tolist()`` of a whole tensor) would read device memory back: exclude this patch
with ``CC_RUNTIME_PATCHES`` and report it.

Tensor parallelism (TP world size > 1, see :mod:`.sglang_loading_rows`): before the real load, the
model's real ``load_weights`` runs once on data-less tracers with every write suppressed; a tensor
whose only use was one dim-0 ``narrow`` copied into a parameter (column-parallel, merged gate/up and
QKV shards, vocab-parallel embedding and LM head) crosses as those rows only, handed out at its full
shape with the rows in place and the rest poisoned, so the same ``weight_loader`` narrows the same
rows. Every other tensor crosses whole, as upstream: row-parallel weights (split along dim 1),
replicated tensors, fused checkpoint tensors split several times, and everything when the trace
fails (one log line). Verified byte-identical to upstream on SGLang's real Llama at TP=2, both ranks;
so ``CC_RUNTIME_LOAD_TP_ROWS=auto`` (the default) reads rows only for model classes proven that way
(``sglang_loading_rows.VERIFIED_MODELS``), ``on`` for every traced model, ``off`` never.

Related upstream: none (no engine has a CC-aware loader; fastsafetensors' GPUDirect Storage is
unavailable under CC).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..patching import Patch, PatchContext

log = logging.getLogger("cc_runtime.patches.sglang_loading")

WEIGHT_UTILS = "sglang.srt.model_loader.weight_utils"
LOADER = "sglang.srt.model_loader.loader"
ITERATORS = ("safetensors_weights_iterator", "multi_thread_safetensors_weights_iterator",
             "buffered_multi_thread_safetensors_weights_iterator")

#: Tests on CPU put a transport here (a SimDevice or ``"cpu"``), standing in for the CUDA device.
DEVICE_FOR_TESTS: Any = None
#: The last decision: ("cc_runtime" | "upstream", reason), for tests and logs.
LAST: list[tuple[str, str]] = []

_local = threading.local()
_logged: set[str] = set()


def _decide(kind: str, reason: str) -> None:
    LAST.append((kind, reason))
    del LAST[:-16]
    if reason not in _logged:
        _logged.add(reason)
        log.info("cc_runtime: SGLang weights %s: %s", "via cc_runtime.loading" if kind == "cc_runtime" else
                 "via upstream's iterator", reason)


def sglang_device_is_cuda() -> bool:
    """Whether SGLang's device is a CUDA GPU (not ROCm, NPU, XPU, CPU). Local check; torch is already
    imported by the time SGLang's loader runs."""
    if DEVICE_FOR_TESTS is not None:
        return True
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.version.cuda) and not getattr(torch.version, "hip", None) and torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - a broken CUDA setup is not CUDA
        return False


def _why_not(files: Any) -> str | None:
    loader = getattr(_local, "loader", None)
    if loader is None:
        return "not called from DefaultModelLoader._get_weights_iterator"
    if type(loader).__name__ != "DefaultModelLoader":
        return f"{type(loader).__name__} is not the default loader"
    if not sglang_device_is_cuda():
        return "the SGLang device is not CUDA"
    names = [str(f) for f in files]
    if not names or not all(n.endswith(".safetensors") for n in names):
        return "not a list of .safetensors files"
    return None


def _device() -> Any:
    if DEVICE_FOR_TESTS is not None:
        return DEVICE_FOR_TESTS
    import torch

    return torch.device("cuda", torch.cuda.current_device())


def _iterator(name: str, original: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    def iterator(hf_weights_files: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        why = _why_not(hf_weights_files)
        trace = getattr(_local, "tracing", None)
        if trace is not None:
            from ..loading.tp_rows import Untraceable
            from .sglang_loading_rows import tracers

            if why is not None:  # upstream would read real data into the model being traced
                raise Untraceable(f"{name}: {why}")
            _local.served = True
            return tracers(trace, sorted(str(f) for f in hf_weights_files))
        if why is not None:
            _decide("upstream", f"{name}: {why}")
            return original(hf_weights_files, *args, **kwargs)
        from ..loading import ChunkedLoader
        from .sglang_loading_rows import rows_for, summary

        files = sorted(str(f) for f in hf_weights_files)
        rows = rows_for(_local, files)
        # headers checked here, before anything is yielded
        loader = ChunkedLoader(files, _device(), rows=rows or None, rows_in_place=True)
        _decide("cc_runtime", f"{name}: {len(files)} file(s), {loader.nbytes} bytes in "
                              f"{len(loader.plan.chunks)} chunk(s) of {loader.chunk_bytes >> 20} MiB"
                              + (f"; {summary(loader)}" if rows else ""))
        return iter(loader)

    iterator.__name__ = name
    iterator.__wrapped__ = original  # type: ignore[attr-defined]
    return iterator


def _mark_caller(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    prev = getattr(_local, "loader", None)
    _local.loader = instance
    _local.served = False
    try:
        out = wrapped(*args, **kwargs)
        if getattr(_local, "tracing", None) is not None and not _local.served:
            from ..loading.tp_rows import Untraceable

            # Another iterator (pt, fastsafetensors, npcache) would feed real data to the trace.
            raise Untraceable("a weights iterator other than the patched safetensors ones")
        return out
    finally:
        _local.loader = prev


def _apply(ctx: PatchContext) -> None:
    import importlib

    wu = importlib.import_module(WEIGHT_UTILS)
    loader_mod = sys.modules[LOADER]
    if not callable(getattr(wu, "safetensors_weights_iterator", None)):
        raise RuntimeError(f"{WEIGHT_UTILS}.safetensors_weights_iterator not found (patch point moved)")
    default = getattr(loader_mod, "DefaultModelLoader", None)
    if default is None or not callable(getattr(default, "_get_weights_iterator", None)):
        raise RuntimeError(f"{LOADER}.DefaultModelLoader._get_weights_iterator not found (patch point moved)")
    for name in ITERATORS:
        original = getattr(wu, name, None)
        if callable(original):
            ctx.replace(wu, name, _iterator(name, original), rebind=True)
    ctx.wrap(default, "_get_weights_iterator", _mark_caller)
    if callable(getattr(default, "_get_all_weights", None)):
        from .sglang_loading_rows import _logged as rows_logged
        from .sglang_loading_rows import trace_all_weights

        ctx.wrap(default, "_get_all_weights", trace_all_weights(_local, sglang_device_is_cuda))
        ctx.on_revert(rows_logged.clear)
    ctx.on_revert(_logged.clear)


def _when(state: Any) -> bool:
    """Wanted under CC on a CUDA device. Where torch is not imported yet (activation at ``import
    cc_runtime``), the check is repeated at call time, which falls back to upstream with the reason."""
    if not state.enabled:
        return False
    return "torch" not in sys.modules or sglang_device_is_cuda()


PATCHES = [
    Patch(
        name="sglang.loading",
        target="sglang",
        versions=">=0.5.12,<0.5.24",
        summary="safetensors weight iterators yield device tensors loaded in large chunks (one crossing "
                "per CC_RUNTIME_LOAD_CHUNK_MB, not per tensor); weight_loaders copy device to device",
        upstream="none (no CC-aware loader in SGLang, vLLM, fastsafetensors or runai-model-streamer)",
        apply=_apply,
        module=LOADER,
        when=_when,
        why="under CC every weight_loader copy is a pageable, host-synchronous crossing with a fixed cost: "
            "loading pays it once per tensor (tens of thousands for an MoE checkpoint)",
    ),
]
