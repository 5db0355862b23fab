"""Per-step host->device inputs in SGLang go through cc_runtime's H2D stager under CC.

Why: under CC a host->device copy blocks the issuing thread until everything queued before it on the
stream has run, and pays CC's fixed crossing cost (~20-40 us) each. SGLang builds each step's inputs
with several small copies (``ScheduleBatch`` and ``ForwardBatch`` builders, sampling info, allocators),
some on the forward stream behind the forward still running (vLLM PR 52226 measured one forward of
stall per such copy). 0.5.23 even turns pinning off under CC, so every such copy is synchronous.

How (every change goes through PatchContext, so ``cc_runtime.deactivate()`` restores the original
objects). The per-step host->device inputs, by builder (0.5.12 names; streams as SGLang issues them):
``ScheduleBatch.prepare_for_extend`` copies ``input_ids``, ``seq_lens`` and ``orig_seq_lens`` (pinned,
``non_blocking``, schedule stream); ``mem_cache`` ``alloc_for_extend`` the prefix / extend lengths and
``req_pool_indices`` (pageable ``non_blocking``); ``SamplingBatchInfo.from_schedule_batch`` its sampling
tensors (``torch.tensor(list, device=...)``); ``ScheduleBatch.filter_batch`` its keep-indices;
``ForwardBatch.init_new`` the extend lengths, ``num_token_non_padded`` and the DP ``global_num_tokens``
(forward stream, behind the forward queued before it). 0.5.23 routes many of these through
``utils.common.async_h2d`` / ``async_h2d_stack``, which pin and copy ``non_blocking`` off CC and copy
pageable and synchronous under CC (37 call sites), and leaves the prefill ``input_ids`` on the host
(``prefill_input_ids_cpu``) for ``overlap_utils.resolve_forward_inputs`` to copy at forward entry.

* ``sglang.h2d_staging`` (0.5.12 - 0.5.22): the batch builders run inside
  :func:`cc_runtime.staging.deferred.deferred_h2d`: ``ScheduleBatch.prepare_for_extend`` (which calls
  ``alloc_for_extend`` and ``SamplingBatchInfo.from_schedule_batch``), ``prepare_for_decode``,
  ``filter_batch``, ``merge_batch``, ``get_model_worker_batch``, ``ForwardBatch.init_new`` and
  ``SamplingBatchInfo.from_schedule_batch`` (also called by the scheduler on its own). Each
  fresh device tensor made from host data (``host.to(dev)``, ``torch.tensor(data, device=dev)``) is a
  placeholder (its host bytes packed at the call) until anything could read it (or the builder's end:
  see the readers below); then all pending ones cross
  together: one packed copy on the stager's idle side stream, the current stream waits on its event,
  one device->device copy fills the placeholders. A builder that makes its inputs before it uses them
  crosses once.
* ``sglang.h2d_staging_primitives`` (0.5.23): the same builders plus ``resolve_forward_inputs`` (the
  prefill ``input_ids`` copy at forward entry, on the forward stream); ``prepare_for_extend`` also copies
  the prefill ``input_ids`` inside its own scope, so they ride its crossing, and
  ``resolve_forward_inputs`` uses that copy while ``prefill_input_ids_cpu`` is still the tensor copied
  (the forward stream waits on the schedule stream before it, as for ``seq_lens``); and the central
  primitives ``utils.common.async_h2d`` / ``async_h2d_stack`` (37 call sites) stage through the side
  stream wherever they are called, so none waits behind a queued forward (rebound in every module that
  imported them by name).

Verified per step on the real builder chain of both versions (CPU, simulated device:
tests/staging/test_staging_sglang_step_upstream.py; SGLang's own ``Req``, ``ReqToTokenPool``,
``TokenToKVPoolAllocator``, chunk cache, ``FutureMap`` and ``KVIndexTranslator``; stand-ins for the model
runner, the model config, the parallel groups and the Triton launch), device tensors identical with and
without the patch. Crossings per step, upstream -> patched, for TP1 / MoE EP / MoE EP + DP attention:

* prefill (``prepare_for_extend`` .. ``ForwardBatch.init_new``), ``torch_native`` allocation path:
  0.5.12 12 / 13 / 15 -> 2, 0.5.23 14 / 13 / 15 -> 2: the schedule-side builders once, ``init_new``
  (which runs where the forward does, after the scheduler's stream wait) once.
* prefill with a Triton allocation path (MoE EP): 14 -> 2 on 0.5.12, 16 -> 2 on 0.5.23.
  ``alloc_for_extend`` launches ``write_req_to_token_pool_triton``, which reads the builder's pending
  inputs mid-builder, so they cross there. The inputs made after it are pre-staged before
  ``alloc_for_extend`` (``Collector.prestage``) so they ride that crossing: the sampling inputs
  (temperatures, top_p, top_k, min_p, which depend only on the requests' sampling parameters) and on
  0.5.23 the prefill ``input_ids`` (pre-staged where ``flatten_arrays_to_pinned_cpu`` makes them, before
  the launch). A later copy gets a pre-staged device tensor only if its host bytes equal the snapshot
  that crossed, and each is handed out once, so a wrong guess costs a few unused bytes, never stale data.
  Inputs the builder makes after the launch that are not pre-staged (deterministic ``sampling_seed``,
  ``logit_bias``, ``input_embeds``, multimodal and mamba tensors) still cross at the builder's end.
* mixed chunk (new prefills' ``prepare_for_extend``, the running batch's ``prepare_for_decode``,
  ``mix_with_running`` / ``merge_batch``, then the forward-side builders; MoE EP): 13 -> 2 on both.
* decode (``prepare_for_decode`` .. ``ForwardBatch.init_new``): 0 / 1 / 3 -> 0 / 1 / 1 on both.
* the decode step right after a request finished (MoE EP): 2 -> 2. ``filter_batch``'s keep-indices are
  read by its own device gathers at once, before the forward's inputs (``num_token_non_padded``, DP
  ``global_num_tokens``) exist; only host mirrors of every gathered tensor would fold them.

Sites still copying on their own, and why:

* ``dst.copy_(host)`` into existing device buffers (CUDA-graph input buffers, FlashInfer / Triton
  attention ``init_forward_metadata`` and ``plan()`` workspace copies, ``global_num_tokens`` gathers
  into preallocated buffers): the destination may alias a larger buffer the code reads through another
  name, so deferring it could let a reader see stale bytes.
* ``.to(dtype=..., device=...)`` conversions and ``Tensor.cuda()``: left as written (rare per step).
* host tensors over 1 MiB (multimodal features, ``input_embeds``): bandwidth dominates, a separate
  crossing costs little; and copies made during CUDA-graph capture (the stager steps aside there).
* 0.5.23 ``async_h2d`` sites outside the builders (allocators, memory pool, SWA, speculative workers,
  disaggregation decode) and ``pin_memory=True`` sites that bypass the gate (``overlap_utils``,
  ``flashinfer_mla_backend``): each is its own crossing (staged on the side stream, not coalesced with
  the builder's), because they happen outside any builder scope.
* 0.5.12 - 0.5.22: code outside the wrapped builders (speculative workers, disaggregation, LoRA
  managers) copies as upstream does.

Deferred sites and their readers. A placeholder exists only inside a wrapped builder's scope; every
reader below flushes it first (how each is caught: :mod:`cc_runtime.staging.readers`), and the scope's
exit flushes what is left before the builder returns, so nothing the builder publishes is unfilled:

* 0.5.12 - 0.5.22, the builders listed under ``sglang.h2d_staging``: torch ops on the inputs (gathers,
  ``cumsum``, comparisons, ``.tolist()``; the scope's mode, any nesting depth); Triton launches, which
  read ``data_ptr()``: ``write_req_to_token_pool_triton`` in ``alloc_for_extend`` on Triton-capable
  backends, ``compute_position_triton`` in ``init_new``; ``sgl_kernel`` ops (``torch.ops``, seen by
  the mode); one tvm-ffi JIT kernel: ``init_new``'s decode positions on CUDA
  (``sglang.jit_kernel.clamp_position``: ``module.clamp_position(dst, seq_lens)`` after a
  ``torch.empty_like`` of the same tensor).
* 0.5.23, the same builders plus ``resolve_forward_inputs``: the same readers (the kernels now live in
  ``sglang.kernels.ops``: ``clamp_position`` through tvm-ffi, ``compute_position_triton``,
  ``write_req_to_token_pool_triton`` and the speculative ``gather_spec_extras`` through Triton).
* tvm-ffi modules are loaded lazily, at their first call, after this patch applied: their functions
  are fetched through the wrapped ``tvm_ffi.Module`` accessors and flush before each call. A function
  fetched earlier still flushes: tvm-ffi asks a placeholder's class for ``__tvm_ffi_object__``, which
  flushes and waits for the fill before handing the tensor over. ``async_h2d`` /
  ``async_h2d_stack`` outside a scope make no placeholders (they stage and consume at once).
* Readers on other threads see a placeholder only if the builder hands one over mid-scope (none does);
  torch ops there flush anyway (the placeholder class is not thread-local), as do DLPack exports,
  tvm-ffi calls and stream / event synchronisation from any thread.

With ``CC_RUNTIME_STAGING_VERIFY=1`` every placeholder is poisoned when made; the CPU tests run both
versions' builder chains that way and compare every tensor any op or kernel stand-in read with the
unpatched run (tests/staging/test_staging_reads_upstream.py).

Related: vLLM PR 52226 (``StagedH2DCopier``, not merged); no SGLang release stages inputs. Future: an
upstream batched-H2D primitive would make this a version-gated no-op.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..patching import Patch, PatchContext
from .sglang_staging_state import STATE, _device_of, _key, _safe_stager, _targets, bind, stager_for

__all__ = ["PATCHES", "STATE", "bind", "stager_for"]

log = logging.getLogger("cc_runtime.patches.sglang_staging")

SCHEDULE_BATCH_MODULE = "sglang.srt.managers.schedule_batch"
SAMPLING_MODULE = "sglang.srt.sampling.sampling_batch_info"
FORWARD_BATCH_MODULE = "sglang.srt.model_executor.forward_batch_info"
COMMON_MODULE = "sglang.srt.utils.common"
OVERLAP_MODULE = "sglang.srt.managers.overlap_utils"

REQUIRED_BUILDERS = ("prepare_for_extend", "prepare_for_decode")
OPTIONAL_BUILDERS = ("filter_batch", "merge_batch", "get_model_worker_batch")


_warned_sites: set[str] = set()


def _in_scope(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    from ..staging.deferred import current, deferred_h2d

    if current() is not None:
        return wrapped(*args, **kwargs)  # an outer builder's scope already collects
    try:
        device = _device_of(instance, args, kwargs)
        stager = stager_for(device) if device is not None else None
    except Exception as exc:  # noqa: BLE001 - never break the step over staging
        site = str(getattr(wrapped, "__qualname__", None) or getattr(wrapped, "__name__", repr(wrapped)))
        if site not in _warned_sites:  # once per site, not once per step
            _warned_sites.add(site)
            log.warning("cc_runtime: H2D staging skipped for %s: %s (logged once for this site)", site, exc)
        stager = None
    if stager is None:
        return wrapped(*args, **kwargs)
    with deferred_h2d(stager, _targets(_key(device) or "")):
        return wrapped(*args, **kwargs)


def _prestage_sampling(batch: Any) -> None:
    """Pre-stage the host tensors ``SamplingBatchInfo.from_schedule_batch`` makes at the builder's end.

    They depend only on the requests' sampling parameters, so they are known before ``alloc_for_extend``.
    On the Triton allocation path ``write_req_to_token_pool_triton`` reads the builder's pending inputs
    mid-builder; pre-staged, these cross with them instead of at the builder's end. Each later copy gets
    its pre-staged placeholder only if its bytes equal the snapshot that crossed (see ``Collector.prestage``).
    """
    import torch

    from ..staging.deferred import current

    collector = current()
    if collector is None:
        return
    try:
        params = [r.sampling_params for r in batch.reqs]
        for values, dtype in (([p.temperature for p in params], torch.float), ([p.top_p for p in params], torch.float),
                              ([p.top_k for p in params], torch.int32), ([p.min_p for p in params], torch.float)):
            collector.prestage(torch.tensor(values, dtype=dtype))
    except Exception as exc:  # noqa: BLE001 - the builder's own copies still run
        log.debug("cc_runtime: sampling inputs not pre-staged: %s", exc)


def _extend(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """``prepare_for_extend`` in one scope, its sampling inputs pre-staged (see ``_prestage_sampling``)."""

    def build() -> Any:
        _prestage_sampling(instance)
        return wrapped(*args, **kwargs)

    return _in_scope(lambda *_a, **_k: build(), instance, args, kwargs)


STAGED_INPUT_IDS = "_cc_runtime_staged_input_ids"
_extend_tls = threading.local()


def _prestaging_flatten(original: Any) -> Any:
    """0.5.23 ``schedule_batch.flatten_arrays_to_pinned_cpu``: inside ``prepare_for_extend`` its host
    ``input_ids`` (made before ``alloc_for_extend``) are pre-staged, so the copy made of them at the
    builder's end rides the builder's first crossing (the Triton launch's, where there is one)."""

    def flatten_arrays_to_pinned_cpu(*args: Any, **kwargs: Any) -> Any:
        from ..staging.deferred import current

        out = original(*args, **kwargs)
        collector = current() if getattr(_extend_tls, "active", False) else None
        if collector is not None:
            try:
                collector.prestage(out)
            except Exception as exc:  # noqa: BLE001 - the builder-end copy still runs
                log.debug("cc_runtime: prefill input_ids not pre-staged: %s", exc)
        return out

    flatten_arrays_to_pinned_cpu.__wrapped__ = original  # type: ignore[attr-defined]
    return flatten_arrays_to_pinned_cpu


def _extend_with_input_ids(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """0.5.23 ``prepare_for_extend``: its prefill ``input_ids`` ride the builder's own crossing.

    Upstream leaves them on the host (``prefill_input_ids_cpu``) for ``resolve_forward_inputs`` to copy at
    forward entry: a third crossing per prefill step (the builder's, this one, ``ForwardBatch.init_new``'s).
    Here the copy is made inside the builder's scope, so it crosses with ``seq_lens`` and the sampling
    inputs, and is kept with the host tensor it copies; ``resolve_forward_inputs`` uses it only while
    ``prefill_input_ids_cpu`` is still that very tensor (a merge, a mixed chunk or an encoder replay that
    rebuilds it falls back to the plain copy). The forward stream reads it as it reads ``seq_lens``, made
    on the same schedule stream before the scheduler's forward-stream wait.
    """
    from ..staging.deferred import current

    def build() -> Any:
        _prestage_sampling(instance)
        _extend_tls.active = True
        try:
            out = wrapped(*args, **kwargs)
        finally:
            _extend_tls.active = False
        host = getattr(instance, "prefill_input_ids_cpu", None)
        if current() is not None and host is not None and getattr(host, "is_cpu", False):
            try:
                setattr(instance, STAGED_INPUT_IDS, (host, host.to(instance.device, non_blocking=True)))
            except Exception as exc:  # noqa: BLE001 - the forward-entry copy still runs
                log.debug("cc_runtime: prefill input_ids not staged with the builder: %s", exc)
        return out

    return _in_scope(lambda *_a, **_k: build(), instance, args, kwargs)


def _resolve_with_staged_ids(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    batch = args[0] if args else kwargs.get("batch")
    staged = getattr(batch, STAGED_INPUT_IDS, None)
    if staged is not None:
        host, dev = staged
        try:
            delattr(batch, STAGED_INPUT_IDS)
        except AttributeError:
            pass
        if batch.prefill_input_ids_cpu is host:  # still the tensor copied: its device copy stands in
            if getattr(dev, "is_cuda", False):
                # Made on the schedule stream, read on this (forward) one: the caching allocator must not
                # hand the block to the schedule stream's next batch while this forward still reads it.
                import torch

                dev.record_stream(torch.cuda.current_stream(dev.device))
            batch.prefill_input_ids_cpu = dev  # upstream's ``.to(device)`` of a device tensor is itself
    return _in_scope(wrapped, instance, args, kwargs)


def _staged_async_h2d(original: Any) -> Any:
    """0.5.23 ``async_h2d(args, *, dtype, device)`` through the stager (side stream; pass-through if idle)."""

    def async_h2d(args: Any, *, dtype: Any, device: Any) -> Any:
        from ..staging.deferred import current

        stager = None if current() is not None else _safe_stager(device)
        if stager is None:  # inside a builder scope the collector defers the body's own copy
            return original(args, dtype=dtype, device=device)
        return stager.copy([args], [dtype])[0]

    async_h2d.__wrapped__ = original  # type: ignore[attr-defined]
    return async_h2d


def _staged_async_h2d_stack(original: Any) -> Any:
    def async_h2d_stack(tensors: Any, *, device: Any) -> Any:
        import torch

        from ..staging.deferred import current

        stager = None if current() is not None or not tensors[0].is_cpu else _safe_stager(device)
        if stager is None:
            return original(tensors, device=device)
        return stager.copy([torch.stack(tensors)])[0]

    async_h2d_stack.__wrapped__ = original  # type: ignore[attr-defined]
    return async_h2d_stack


def _wrap_builders(ctx: PatchContext, extend: Any = _extend) -> list[str]:
    import importlib

    sb = importlib.import_module(SCHEDULE_BATCH_MODULE).ScheduleBatch
    fb = importlib.import_module(FORWARD_BATCH_MODULE).ForwardBatch
    missing = [m for m in REQUIRED_BUILDERS if not hasattr(sb, m)]
    if missing or not hasattr(fb, "init_new"):
        raise RuntimeError(f"sglang batch builders not found ({missing or 'ForwardBatch.init_new'}): patch point moved")
    wrapped = []
    for name in (*REQUIRED_BUILDERS, *OPTIONAL_BUILDERS):
        if hasattr(sb, name):
            ctx.wrap(sb, name, extend if name == "prepare_for_extend" else _in_scope)
            wrapped.append(f"ScheduleBatch.{name}")
    ctx.wrap(fb, "init_new", _in_scope)
    wrapped.append("ForwardBatch.init_new")
    sbi = getattr(importlib.import_module(SAMPLING_MODULE), "SamplingBatchInfo", None)
    if sbi is not None and hasattr(sbi, "from_schedule_batch"):  # also called outside the builders
        ctx.wrap(sbi, "from_schedule_batch", _in_scope)
        wrapped.append("SamplingBatchInfo.from_schedule_batch")
    ctx.on_revert(STATE.reset)
    from ..staging import readers

    readers.install()  # before SGLang loads its tvm-ffi kernels, so their functions flush first
    ctx.on_revert(readers.uninstall)
    return wrapped


def _apply_builders(ctx: PatchContext) -> None:
    _wrap_builders(ctx)


def _apply_primitives(ctx: PatchContext) -> None:
    import importlib

    common = importlib.import_module(COMMON_MODULE)
    overlap = importlib.import_module(OVERLAP_MODULE)
    for name in ("async_h2d", "async_h2d_stack"):
        if not callable(getattr(common, name, None)):
            raise RuntimeError(f"{COMMON_MODULE}.{name} not found (0.5.23 patch point moved)")
    if not callable(getattr(overlap, "resolve_forward_inputs", None)):
        raise RuntimeError(f"{OVERLAP_MODULE}.resolve_forward_inputs not found (0.5.23 patch point moved)")
    _wrap_builders(ctx, extend=_extend_with_input_ids)
    sbm = importlib.import_module(SCHEDULE_BATCH_MODULE)
    if callable(getattr(sbm, "flatten_arrays_to_pinned_cpu", None)):  # else: input_ids cross at the builder's end
        ctx.replace(sbm, "flatten_arrays_to_pinned_cpu", _prestaging_flatten(sbm.flatten_arrays_to_pinned_cpu))
    ctx.wrap(overlap, "resolve_forward_inputs", _resolve_with_staged_ids, rebind=True)
    ctx.replace(common, "async_h2d", _staged_async_h2d(common.async_h2d), rebind=True)
    ctx.replace(common, "async_h2d_stack", _staged_async_h2d_stack(common.async_h2d_stack), rebind=True)


PATCHES = [
    Patch(
        name="sglang.h2d_staging",
        family="sglang.h2d_staging",  # version-specific variants of one fix (strict mode)
        target="sglang",
        versions=">=0.5.12,<0.5.23",
        summary="batch builders' host->device inputs cross once per builder, on an idle side stream",
        upstream="vLLM PR 52226 (StagedH2DCopier, open); no SGLang release stages inputs",
        apply=_apply_builders,
        module=SCHEDULE_BATCH_MODULE,
        why="under CC each per-step H2D input copy is a ~20-40 us crossing and waits behind the queued forward",
    ),
    Patch(
        name="sglang.h2d_staging_primitives",
        family="sglang.h2d_staging",  # version-specific variants of one fix (strict mode)
        target="sglang",
        versions=">=0.5.23,<0.5.24",
        summary="async_h2d / async_h2d_stack, batch builders and resolve_forward_inputs stage inputs on a side stream",
        upstream="vLLM PR 52226 (StagedH2DCopier, open); SGLang 0.5.23 turns pinning off under CC instead",
        apply=_apply_primitives,
        module=SCHEDULE_BATCH_MODULE,
        why="under CC each per-step H2D input copy is a ~20-40 us crossing and waits behind the queued forward",
    ),
]
