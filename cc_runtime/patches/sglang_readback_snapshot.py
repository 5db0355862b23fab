"""Readback for hidden states and speculative results under CC: a device snapshot, then the async worker.

Why: results that may alias CUDA-graph buffers (``return_hidden_states``, speculative accept lengths,
DSpark's, routed-experts / indexer captures, expert metrics) must be read before the next replay rewrites
them. SGLang 0.5.23 therefore copies them inline (``Scheduler._copy_result_to_cpu``: "only a copy queued
right behind this forward reads them in time"), and ``sglang.readback_worker`` (0.5.12 - 0.5.22) keeps
them inline too. Under CC an inline device->host copy blocks the scheduler thread behind the whole
forward, every step such a batch runs. TensorRT-LLM PR 11573 fixed the same for its MTP/Eagle3 sampler.

How: right behind the forward, on the forward stream, the graph-aliasing tensors of the step are
snapshotted into one fresh device buffer: one kernel (``cc_runtime.readback.coalesce.pack``: a
``torch.cat`` of byte views), a D2D copy that does not block under CC. The result's fields become views of
that buffer; the next replay is queued on the same stream after the snapshot, so it cannot change them.
The caching allocator is the ring: each step gets its own block, recycled when the result drops it
(``record_stream`` by the readback keeps it alive until the copy is done). The result then takes the
asynchronous, coalesced readback path every other result takes:

* ``sglang.readback_snapshot`` (0.5.23): ``Scheduler._copy_result_to_cpu`` snapshots, then submits the
  copy to upstream's ``AsyncD2HCopyWorker`` exactly as upstream does for plain results (copy stream waits
  for the forward stream, readiness recorded there, ``copy_done`` a host-side done-object).
* ``sglang.readback_snapshot_worker`` (0.5.12 - 0.5.22, needs ``sglang.readback_worker``):
  ``GenerationBatchResult.copy_to_cpu`` snapshots on the scheduler's forward stream (remembered at
  ``Scheduler.init_overlap``), marks the result, and ``sglang.readback_worker`` then hands it to its
  worker (its ``_worker_safe`` accepts a snapshotted result).

A snapshot that cannot be taken (no bound forward stream, an allocation error) leaves the result to
upstream's inline copy, with one log line. Values are unchanged: the same tensors, read later.

What stays inline, and why (each is consumed in the iteration that produced it, so a worker cannot hide
the wait; coalescing still applies where ``sglang.readback_*`` covers it): the non-overlap speculative
path, ``_copy_auxiliary_output_to_cpu`` and the pipeline-parallel mixin (0.5.23); results carrying
``pp_hidden_states_proxy_tensors``; embedding / reward results (``EmbeddingBatchResult``: left to upstream).

Upstream: SGLang 0.5.23 ``_copy_result_to_cpu`` (the inline exception); TensorRT-LLM PR 11573 (same fix).
Future: propose the snapshot for ``_copy_result_to_cpu`` upstream; then this becomes a version-gated no-op.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from functools import partial
from typing import Any

from ..patching import Patch, PatchContext

log = logging.getLogger("cc_runtime.patches.sglang_readback_snapshot")

SCHEDULER_MODULE = "sglang.srt.managers.scheduler"
SNAPSHOT_ATTR = "cc_runtime_snapshot"  # set on a result whose graph-aliasing fields were snapshotted
_SPEC_FIELDS = ("accept_lens", "block_accept_lens", "cap_lens")
_HOLDERS = ("routed_experts_output", "indexer_topk_output", "expert_distribution_metrics")


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.device_module: Any = None  # the scheduler's (0.5.12 - 0.5.22 path)
        self.forward_stream: Any = None
        self.snapshots = 0
        self.failures = 0

    def reset(self) -> None:
        with self.lock:
            self.device_module = self.forward_stream = None
            self.snapshots = self.failures = 0


STATE = _State()


class _Slot:
    """One tensor field: read it, later point it at its snapshot view (``finish`` once all are put)."""

    def __init__(self, get: Any, put: Any, finish: Any = None) -> None:
        self.get, self.put, self.finish = get, put, finish


def _attr_slot(obj: Any, name: str) -> _Slot:
    return _Slot(lambda: getattr(obj, name), lambda v: setattr(obj, name, v))


def _holder_slots(holder: Any) -> list[_Slot]:
    import torch

    if hasattr(holder, "map_device_tensors"):  # 0.5.2x: the holder names its own device tensors
        found: list[Any] = []

        def collect(t: Any) -> Any:
            found.append(t)
            return t  # unchanged: this pass only lists the holder's device tensors

        holder.map_device_tensors(collect)
        views: dict[int, Any] = {}

        def finish() -> None:
            order = iter(range(len(found)))
            holder.map_device_tensors(lambda t: views.get(next(order), t))  # unsnapshotted: as they were

        return [_Slot(lambda t=t: t, lambda v, i=i: views.__setitem__(i, v), finish)
                for i, t in enumerate(found)]
    if dataclasses.is_dataclass(holder):  # 0.5.12: TopkCaptureOutput, ExpertDistributionMetrics
        return [_attr_slot(holder, f.name) for f in dataclasses.fields(holder)
                if isinstance(getattr(holder, f.name, None), torch.Tensor)]
    return []


def aliasing_slots(result: Any, hidden: bool, holders: bool) -> list[_Slot]:
    """The fields of ``result`` that may alias CUDA-graph buffers and that ``copy_to_cpu`` reads (logprobs
    are not among them: the sampler computes them after the graph, and upstream reads them asynchronously)."""
    slots: list[_Slot] = []
    logits = getattr(result, "logits_output", None)
    if hidden and logits is not None and getattr(logits, "hidden_states", None) is not None:
        slots.append(_attr_slot(logits, "hidden_states"))
    slots += [_attr_slot(result, n) for n in _SPEC_FIELDS if getattr(result, n, None) is not None]
    if holders:
        for name in _HOLDERS:
            holder = getattr(result, name, None)
            if holder is not None:
                slots += _holder_slots(holder)
    if slots and getattr(result, "next_token_ids", None) is not None:
        # A speculative step's committed tokens come out of the verify graph too (DSpark's
        # ``accept.out_tokens``); in the same kernel they cost nothing extra. A plain result (no slot
        # above) is left alone: it needs no snapshot.
        slots.append(_attr_slot(result, "next_token_ids"))
    return slots


def _mark_device(backend: Any, views: list[Any]) -> None:
    # The simulated device tracks residency per tensor object; CUDA views are device tensors already.
    sim = getattr(backend, "sim", None)
    if sim is not None and hasattr(sim, "mark_device"):
        for v in views:
            sim.mark_device(v)


def snapshot(result: Any, *, hidden: bool, holders: bool) -> int:
    """Pack the aliasing device tensors of ``result`` into one fresh device buffer (one kernel on the
    current stream) and point the fields at views of it. Returns how many tensors were snapshotted."""
    import torch

    from ..readback.coalesce import pack, unpack
    from .sglang_readback import _backend_of

    slots = [s for s in aliasing_slots(result, hidden, holders) if isinstance(s.get(), torch.Tensor)]
    if not slots:
        return 0
    backend = _backend_of(slots[0].get())
    if backend is None:
        return 0  # host tensors: nothing a replay can rewrite
    slots = [s for s in slots if backend.is_device_tensor(s.get()) and s.get().layout == torch.strided]
    if not slots:
        return 0
    buf, layout = pack([s.get() for s in slots], backend)
    views = unpack(buf, layout)
    _mark_device(backend, views)
    for slot, view in zip(slots, views, strict=True):
        slot.put(view)
    for finish in {id(s.finish): s.finish for s in slots if s.finish is not None}.values():
        finish()
    setattr(result, SNAPSHOT_ATTR, buf)
    with STATE.lock:
        STATE.snapshots += 1
    return len(views)


def _failed(exc: BaseException) -> None:
    with STATE.lock:
        STATE.failures += 1
        first = STATE.failures == 1
    if first:
        log.error("cc_runtime: readback snapshot failed (%s: %s); such results stay on upstream's inline copy",
                  type(exc).__name__, exc)


# -- 0.5.23: Scheduler._copy_result_to_cpu -----------------------------------------------------------
def _copy_result_to_cpu(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    batch_result = args[0] if args else kwargs["batch_result"]
    batch = args[1] if len(args) > 1 else kwargs["batch"]
    if not getattr(instance, "enable_async_d2h_copy", False) or not (
            batch.return_hidden_states or batch.spec_algorithm.is_dspark()):
        return wrapped(*args, **kwargs)  # upstream already reads it asynchronously (or CC is off there)
    try:
        with instance.device_module.stream(instance.forward_stream):
            snapshot(batch_result, hidden=bool(batch.return_hidden_states), holders=False)
    except Exception as exc:  # noqa: BLE001 - fields untouched: upstream's inline copy is still right
        _failed(exc)
        return wrapped(*args, **kwargs)
    # Upstream's own asynchronous branch, now safe for this result.
    copy_fn = partial(batch_result.copy_to_cpu, return_logprob=batch.return_logprob,
                      return_hidden_states=batch.return_hidden_states)
    instance.copy_stream.wait_stream(instance.forward_stream)
    with instance.copy_stream_ctx:
        batch_result.copy_done = instance.async_d2h_worker.submit(copy_fn)
    return None


def _apply_upstream_worker(ctx: PatchContext) -> None:
    from sglang.srt.managers import scheduler as sched_mod

    sched = getattr(sched_mod, "Scheduler", None)
    if sched is None or not callable(getattr(sched, "_copy_result_to_cpu", None)):
        raise RuntimeError("sglang Scheduler._copy_result_to_cpu not found (0.5.23 patch point moved)")
    ctx.wrap(sched, "_copy_result_to_cpu", _copy_result_to_cpu)
    ctx.on_revert(STATE.reset)


# -- 0.5.12 - 0.5.22: GenerationBatchResult.copy_to_cpu, ahead of sglang.readback_worker ----------------
def _init_overlap(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    with STATE.lock:
        STATE.device_module = getattr(instance, "device_module", None)
        STATE.forward_stream = getattr(instance, "forward_stream", None)
    return result


def _copy_to_cpu(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    from . import sglang_readback

    worker = sglang_readback.STATE.worker
    module, stream = STATE.device_module, STATE.forward_stream
    if worker is None or worker.closed or module is None or stream is None \
            or getattr(instance, "pp_hidden_states_proxy_tensors", None) is not None:
        return wrapped(*args, **kwargs)
    hidden = bool(args[1] if len(args) > 1 else kwargs.get("return_hidden_states", True))
    try:
        with module.stream(stream):
            snapshot(instance, hidden=hidden, holders=True)
    except Exception as exc:  # noqa: BLE001 - fields untouched: the readback patch keeps it inline
        _failed(exc)
    return wrapped(*args, **kwargs)


def _apply_own_worker(ctx: PatchContext) -> None:
    from sglang.srt.managers import scheduler as sched_mod
    from sglang.srt.managers import utils as utils_mod

    from . import sglang_readback

    gbr = getattr(utils_mod, "GenerationBatchResult", None)
    current = getattr(gbr, "copy_to_cpu", None)
    if getattr(current, "_self_wrapper", None) is not sglang_readback._copy_to_cpu_via_worker:
        raise RuntimeError("needs sglang.readback_worker applied (the worker that reads snapshots)")
    ctx.wrap(sched_mod.Scheduler, "init_overlap", _init_overlap)
    ctx.wrap(gbr, "copy_to_cpu", _copy_to_cpu)
    ctx.on_revert(STATE.reset)


PATCHES = [
    Patch(
        name="sglang.readback_snapshot_worker",
        family="sglang.readback_snapshot",  # version-specific variants of one fix (strict mode)
        target="sglang",
        versions=">=0.5.12,<0.5.23",
        summary="hidden states / speculative results / captures snapshotted on the forward stream (one D2D), "
                "then read by the async worker",
        upstream="TensorRT-LLM PR 11573 (same fix for its MTP/Eagle3 sampler); no SGLang PR",
        apply=_apply_own_worker,
        module=SCHEDULER_MODULE,
        why="results that may alias CUDA-graph buffers are read inline: a host-synchronous copy behind a "
            "whole forward under CC",
    ),
    Patch(
        name="sglang.readback_snapshot",
        family="sglang.readback_snapshot",  # version-specific variants of one fix (strict mode)
        target="sglang",
        versions=">=0.5.23,<0.5.24",
        summary="return_hidden_states / DSpark results snapshotted on the forward stream (one D2D), then "
                "read by SGLang's AsyncD2HCopyWorker instead of inline",
        upstream="SGLang 0.5.23 _copy_result_to_cpu keeps them inline; TensorRT-LLM PR 11573; no SGLang PR",
        apply=_apply_upstream_worker,
        module=SCHEDULER_MODULE,
        why="0.5.23 copies hidden states and DSpark accept lengths inline: under CC that blocks the "
            "scheduler behind the whole forward",
    ),
]
