"""Asynchronous, coalesced per-step readback in SGLang's overlap scheduler under CC.

Why: under CC a device->host copy blocks the issuing thread until everything queued before it on the
stream has run. SGLang's overlap scheduler reads back step N right after queuing it, so the scheduler
thread waits for a whole forward pass every step and CPU/GPU overlap is gone (-18% output throughput
at concurrency 1, SGLang PR 15188). Each step also reads back several small tensors (token ids,
logprobs, top-k values/indices), and every crossing costs ~20 us fixed under CC.

How, per version (the patch points are listed below; every change goes through PatchContext, so
``cc_runtime.deactivate()`` restores the original objects):

* ``sglang.readback_worker`` (0.5.12 - 0.5.22, no upstream worker): wrap ``Scheduler.init_overlap`` to
  start a :class:`~cc_runtime.readback.ReadbackWorker` on the scheduler's device when the overlap
  scheduler is on; wrap ``GenerationBatchResult.copy_to_cpu`` so that a plain sampler result (token
  ids and logprobs only) is read back by the worker: ``copy_done`` becomes the worker's host-side
  done-object, whose ``synchronize()`` waits and re-raises a copy error, the contract every consumer
  already relies on. The body (upstream's own ``copy_to_cpu``) runs on the worker, coalesced.
* ``sglang.readback_coalesce`` (0.5.23, which ships ``AsyncD2HCopyWorker`` and
  ``Scheduler._copy_result_to_cpu``): upstream's worker is kept; every ``copy_to_cpu`` (worker or
  inline) is coalesced into one crossing.

Coalescing: while upstream's ``copy_to_cpu`` body runs, each small device->host copy it asks for is
deferred and answered with a host placeholder: on 0.5.12 - 0.5.22 a thread-local ``TorchFunctionMode``
catches ``tensor.to("cpu")`` / ``.cpu()``; on 0.5.23 the body's single copy primitive
(``managers.utils._async_d2h``, also handed to the sub-holders' ``map_device_tensors``) is replaced; when the body returns, the deferred tensors are packed on the device (one kernel), copied
in one crossing and the placeholders become views of the host buffer. A CUDA ``copy_done`` event the
body recorded is recorded again after that crossing, so ``copy_done.synchronize()`` still covers it.

What stays inline (copied on the scheduler thread, still coalesced), and why:

* results with hidden states (``return_hidden_states``), and on 0.5.12 - 0.5.22 speculative results,
  routed-experts / indexer captures and expert metrics: they may alias CUDA-graph buffers that the next
  replay rewrites. Under CC ``sglang_readback_snapshot`` copies them on the device right behind the
  forward and sends them to the worker; without it (not applied, or a snapshot failed) they stay inline.
* non-overlap paths (0.5.23's non-overlap speculative path, ``_copy_auxiliary_output_to_cpu``, the
  pipeline-parallel mixin): the scheduler consumes the result in the same iteration, so a worker
  cannot hide the wait; coalescing still removes crossings.
* embedding / reward results (``EmbeddingBatchResult.copy_to_cpu`` in the overlap branch): the pooled
  output can come from a CUDA-graph replay (0.5.23 reports ``can_run_cuda_graph`` for embeddings), so
  it may alias graph buffers; left to upstream, not coalesced.
* ``.copy_(...)`` into a caller-provided host tensor (SGLang's pinned ``async_d2h`` when pinning is on,
  i.e. not under CC): left as is, because the destination may alias a larger host buffer.

Related upstream: SGLang PR 15188 (CC measurements), the 0.5.23 ``async_d2h_copy_worker`` (worker, no
coalescing). Future: propose coalescing upstream as a ``map_device_tensors``-style batched primitive;
then this becomes a version-gated no-op.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import threading
import weakref
from typing import Any

from ..patching import Patch, PatchContext

log = logging.getLogger("cc_runtime.patches.sglang_readback")

SCHEDULER_MODULE = "sglang.srt.managers.scheduler"
UTILS_MODULE = "sglang.srt.managers.utils"


class _State:
    """What the patched methods share inside one scheduler process (one scheduler per process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.worker: Any = None  # ReadbackWorker started by our init_overlap wrapper (0.5.12-0.5.22)
        self.backend: Any = None  # the scheduler's device, as a readback backend
        self.workers: weakref.WeakSet[Any] = weakref.WeakSet()

    def reset(self) -> None:
        with self.lock:
            workers = list(self.workers)
            self.worker = None
            self.backend = None
            self.workers = weakref.WeakSet()
        for w in workers:
            w.shutdown()


STATE = _State()


# -- coalescing: defer small device->host copies made by a body, then cross once ------------------
def _cpu_target(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, bool]:
    """(is a plain ``.to(cpu)``, non_blocking) for ``Tensor.to`` arguments; anything fancier -> False."""
    import torch

    rest = list(args[1:])
    kw = dict(kwargs)
    non_blocking = bool(kw.pop("non_blocking", False))
    if len(rest) == 2 and isinstance(rest[1], bool):
        non_blocking = rest.pop()
    if len(rest) == 1 and not kw:
        dev = rest[0]
    elif not rest and set(kw) == {"device"}:
        dev = kw["device"]
    else:
        return False, False
    if not isinstance(dev, (str, torch.device)):
        return False, False
    try:
        return torch.device(dev).type == "cpu", non_blocking
    except RuntimeError:
        return False, False


class _Collector:
    """Small device->host copies deferred while one ``copy_to_cpu`` body runs, crossed once at flush."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.deferred: list[tuple[Any, Any]] = []  # (device source, host placeholder)
        self.non_blocking = True

    def defer(self, src: Any, non_blocking: bool) -> Any:
        """A host placeholder for ``src`` if it qualifies, else None (the caller copies it itself)."""
        import torch

        if not isinstance(src, torch.Tensor) or src.layout != torch.strided \
                or src.numel() * src.element_size() > self.max_bytes:
            return None
        backend = _backend_of(src)
        if backend is None or not backend.is_device_tensor(src):
            return None
        placeholder = torch.empty(src.shape, dtype=src.dtype)
        self.deferred.append((src, placeholder))
        self.non_blocking = self.non_blocking and non_blocking
        return placeholder

    def flush(self) -> int:
        """Issue the deferred copies (one crossing); returns how many tensors it carried."""
        from ..readback.coalesce import read_coalesced

        if not self.deferred:
            return 0
        srcs = [s for s, _ in self.deferred]
        backend = _backend_of(srcs[0])
        pin = self.non_blocking and _pins_host_memory(srcs[0])
        try:
            hosts = read_coalesced(srcs, backend=backend, non_blocking=self.non_blocking, pin_memory=pin)
        except RuntimeError:
            if not pin:
                raise
            # Pinned allocation refused (as CC may do): pageable memory, still one crossing.
            hosts = read_coalesced(srcs, backend=backend, non_blocking=False, pin_memory=False)
        for (_, placeholder), host in zip(self.deferred, hosts, strict=True):
            placeholder.set_(host)  # the placeholder the body stored now is a view of the host buffer
        n, self.deferred = len(self.deferred), []
        return n


def _pins_host_memory(src: Any) -> bool:
    """Whether a non-blocking readback of ``src`` goes to pinned host memory (CUDA devices only)."""
    return bool(src.device.type == "cuda")


_tls = threading.local()


def _current_collector() -> _Collector | None:
    return getattr(_tls, "collector", None)


def _make_mode(collector: _Collector) -> Any:
    return _mode_class()(collector)


@functools.cache
def _mode_class() -> Any:
    # Built once: defining the class costs ~50 us, and copy_to_cpu runs every decode step.
    import torch
    from torch.overrides import TorchFunctionMode

    # torch hands the mode whatever ``torch.Tensor.to`` is at call time (the CC emulator's copy hook
    # while emulating), so it is looked up per call; unwrapped, that is the C method itself.
    def to_funcs() -> tuple[Any, ...]:
        return (torch.Tensor.to, torch._C.TensorBase.to)

    def cpu_funcs() -> tuple[Any, ...]:
        return (torch.Tensor.cpu, torch._C.TensorBase.cpu)

    class DeferDeviceToHost(TorchFunctionMode):
        """Within ``with``: small ``t.to("cpu")`` / ``t.cpu()`` of device tensors return placeholders."""

        def __init__(self, collector: _Collector) -> None:
            super().__init__()
            self.collector = collector

        def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                               kwargs: dict[str, Any] | None = None) -> Any:
            kwargs = kwargs or {}
            if args:
                is_cpu = func in cpu_funcs()
                if is_cpu or func in to_funcs():
                    if is_cpu:
                        to_cpu, nb = len(args) == 1 and not kwargs, False
                    else:
                        to_cpu, nb = _cpu_target(args, kwargs)
                    if to_cpu:
                        placeholder = self.collector.defer(args[0], nb)
                        if placeholder is not None:
                            return placeholder
            return func(*args, **kwargs)

    return DeferDeviceToHost


def _collecting_async_d2h(original: Any) -> Any:
    """SGLang 0.5.23's ``managers.utils._async_d2h`` (the one copy primitive of ``copy_to_cpu``), deferring."""

    def async_d2h(tensor: Any) -> Any:
        collector = _current_collector()
        if collector is not None:
            placeholder = collector.defer(tensor, non_blocking=False)
            if placeholder is not None:
                return placeholder
        return original(tensor)

    async_d2h.__wrapped__ = original  # type: ignore[attr-defined]
    return async_d2h


def _backend_of(tensor: Any) -> Any:
    """The bound scheduler device if any, else the tensor's own torch device module (None on CPU)."""
    backend = STATE.backend
    if backend is not None:
        return backend
    if tensor.device.type == "cpu":
        return None
    import torch

    from ..readback.backend import DeviceModuleBackend

    return DeviceModuleBackend(torch.get_device_module(tensor.device), name=tensor.device.type)


def _is_host_done(done: Any) -> bool:
    # Our CopyDone, upstream 0.5.23's HostCopyDone: record() is a no-op, the worker signals completion.
    return done is not None and (hasattr(done, "set_done") or type(done).__name__ == "CopyDone")


def run_coalesced(body: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run upstream's ``copy_to_cpu`` body with its small device->host copies coalesced into one."""
    from ..readback.coalesce import DEFAULT_MAX_COALESCE_BYTES

    collector = _Collector(DEFAULT_MAX_COALESCE_BYTES)
    outer, _tls.collector = _current_collector(), collector
    try:
        with _make_mode(collector):
            result = body(*args, **kwargs)
    finally:
        _tls.collector = outer
    if collector.flush():
        done = getattr(instance, "copy_done", None)
        if done is not None and not _is_host_done(done):
            done.record()  # the body recorded it before our crossing was queued: move it after
    return result


# -- the scheduler side -----------------------------------------------------------------------------
def _bind_scheduler(scheduler: Any, *, start_worker: bool) -> None:
    """After ``init_overlap``: remember the scheduler's device; start our worker if asked and useful."""
    from ..readback.backend import backend_for
    from ..readback.worker import ReadbackWorker

    module = getattr(scheduler, "device_module", None)
    if module is None or getattr(scheduler, "forward_stream_ctx", None) is None:
        return  # MLX or another path without CUDA-like streams: leave upstream alone
    try:
        backend = backend_for(module)
    except Exception as exc:  # noqa: BLE001 - unknown device: stay on upstream's behaviour
        log.info("cc_runtime: readback patch not bound to device module %r: %s", module, exc)
        return
    with STATE.lock:
        STATE.backend = backend
    if not (start_worker and getattr(scheduler, "enable_overlap", False)):
        return
    worker = ReadbackWorker(backend, name="cc-runtime-d2h-readback")
    with STATE.lock:
        old, STATE.worker = STATE.worker, worker
        STATE.workers.add(worker)
    scheduler.cc_runtime_readback_worker = worker
    if old is not None:
        old.shutdown()
    log.info("cc_runtime: CC readback worker started for the overlap scheduler on %s", backend.name)


def _safe_bind(scheduler: Any, start_worker: bool) -> None:
    try:
        _bind_scheduler(scheduler, start_worker=start_worker)
    except Exception as exc:  # noqa: BLE001 - the scheduler must start even if our worker cannot
        log.error("cc_runtime: readback worker not started (%s: %s); SGLang keeps its own readback",
                  type(exc).__name__, exc)


def _init_overlap_with_worker(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    _safe_bind(instance, start_worker=True)
    return result


def _init_overlap_bind_only(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    _safe_bind(instance, start_worker=False)
    return result


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _worker_safe(result: Any, return_hidden_states: bool) -> bool:
    """Only plain sampler outputs go to the worker on 0.5.12-0.5.22 (see the module docstring)."""
    if getattr(result, "cc_runtime_snapshot", None) is not None:  # sglang_readback_snapshot took a copy
        return getattr(result, "pp_hidden_states_proxy_tensors", None) is None
    logits = getattr(result, "logits_output", None)
    if return_hidden_states and logits is not None and getattr(logits, "hidden_states", None) is not None:
        return False
    for name in ("accept_lens", "next_draft_input", "routed_experts_output", "indexer_topk_output",
                 "expert_distribution_metrics", "pp_hidden_states_proxy_tensors"):
        if getattr(result, name, None) is not None:
            return False
    return True


def _copy_to_cpu_via_worker(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    worker = STATE.worker
    return_hidden_states = bool(_arg(args, kwargs, 1, "return_hidden_states", True))
    if worker is None or worker.closed or not _worker_safe(instance, return_hidden_states):
        return run_coalesced(wrapped, instance, args, kwargs)
    # The caller (run_batch / launch_batch_sample_if_needed) is inside forward_stream_ctx: submit
    # records readiness on the forward stream, exactly where upstream recorded copy_done.
    instance.copy_done = worker.submit(run_coalesced, wrapped, instance, args, kwargs)
    return None


def _copy_to_cpu_coalesced(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return run_coalesced(wrapped, instance, args, kwargs)


def _check_shape(require_worker_upstream: bool) -> tuple[Any, Any]:
    import inspect

    from sglang.srt.managers import scheduler as sched_mod
    from sglang.srt.managers import utils as utils_mod

    sched = getattr(sched_mod, "Scheduler", None)
    gbr = getattr(utils_mod, "GenerationBatchResult", None)
    if sched is None or not hasattr(sched, "init_overlap"):
        raise RuntimeError("sglang Scheduler.init_overlap not found (patch point moved)")
    if gbr is None or not hasattr(gbr, "copy_to_cpu"):
        raise RuntimeError("sglang GenerationBatchResult.copy_to_cpu not found (patch point moved)")
    params = list(inspect.signature(gbr.copy_to_cpu).parameters)
    if params[1:3] != ["return_logprob", "return_hidden_states"]:
        raise RuntimeError(f"GenerationBatchResult.copy_to_cpu{params} has an unexpected signature")
    if require_worker_upstream and not hasattr(sched, "_copy_result_to_cpu"):
        raise RuntimeError("sglang Scheduler._copy_result_to_cpu not found (0.5.23 patch point moved)")
    return sched, gbr


def _apply_worker(ctx: PatchContext) -> None:
    sched, gbr = _check_shape(require_worker_upstream=False)
    ctx.wrap(sched, "init_overlap", _init_overlap_with_worker)
    ctx.wrap(gbr, "copy_to_cpu", _copy_to_cpu_via_worker)
    ctx.on_revert(STATE.reset)


def _apply_coalesce(ctx: PatchContext) -> None:
    from sglang.srt.managers import utils as utils_mod

    sched, gbr = _check_shape(require_worker_upstream=True)
    if not callable(getattr(utils_mod, "_async_d2h", None)):
        raise RuntimeError("sglang.srt.managers.utils._async_d2h not found (0.5.23 patch point moved)")
    ctx.replace(utils_mod, "_async_d2h", _collecting_async_d2h(utils_mod._async_d2h))
    ctx.wrap(sched, "init_overlap", _init_overlap_bind_only)
    ctx.wrap(gbr, "copy_to_cpu", _copy_to_cpu_coalesced)
    ctx.on_revert(STATE.reset)


def _upstream_worker() -> str | None:
    try:
        found = importlib.util.find_spec("sglang.srt.managers.async_d2h_copy_worker") is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return "SGLang ships AsyncD2HCopyWorker (sglang.readback_coalesce adds coalescing instead)"
    return None


PATCHES = [
    Patch(
        name="sglang.readback_worker",
        family="sglang.readback",  # version-specific variants of one fix (strict mode)
        target="sglang",
        versions=">=0.5.12,<0.5.23",
        summary="overlap scheduler reads results back on a worker thread (private stream), one crossing per step",
        upstream="SGLang PR 15188 (CC loss); AsyncD2HCopyWorker in 0.5.23",
        fixed_in="sglang 0.5.23 (worker only; no coalescing)",
        apply=_apply_worker,
        module=SCHEDULER_MODULE,
        upstream_has_it=_upstream_worker,
        why="under CC the per-step D2H readback blocks the scheduler for a whole forward pass",
    ),
    Patch(
        name="sglang.readback_coalesce",
        family="sglang.readback",  # version-specific variants of one fix (strict mode)
        target="sglang",
        versions=">=0.5.23,<0.5.24",
        summary="keep upstream's D2H worker; coalesce each step's readback tensors into one crossing",
        upstream="none (each readback tensor is its own ~20 us crossing under CC in every version)",
        apply=_apply_coalesce,
        module=SCHEDULER_MODULE,
        why="every D2H crossing costs ~20 us fixed under CC and a step reads back several tensors",
    ),
]
