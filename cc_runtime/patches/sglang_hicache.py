"""SGLang's hierarchical cache (HiCache) under CC: host KV pools CC can allocate, and an IO backend that works.

Why: SGLang allocates every HiCache host KV pool with ``alloc_with_host_register`` (the default of the
``ALLOC_MEMORY_FUNCS`` table for CUDA): an mmap'd buffer that is then pinned with
``torch.cuda.cudart().cudaHostRegister``. CC refuses host registration with error 801 (NVIDIA R580 CC
notes; vLLM issue 55428, whose KV offload crash-loops on H200 CC; NCCL likewise, nvtrust issue 57).
From 0.5.13 (which checks the return code) the pool constructor raises and
``--enable-hierarchical-cache`` cannot start; 0.5.12 ignores the return code, so the pool starts
unpinned and the failed call's error is left for the next CUDA error check to trip over. The default ``kernel`` IO backend (``--hicache-io-backend``) makes device
kernels read the host pool through its UVA address (``make_kernel_ptr_table``: "CUDA's UVA makes host
and device addresses equal"): CC gives a kernel no such view (vLLM issue 57224 saw stale UVA views and
silent garbage under CC; fixed for vLLM in PR 57415).

How (two patches, every change through PatchContext, so ``cc_runtime.deactivate()`` undoes it):

* ``sglang.hicache_host_pool``: ``alloc_with_host_register`` is replaced (module attribute, stale
  imports rebound, and the ``ALLOC_MEMORY_FUNCS`` entries that already hold it). With ``pin_memory``
  and the default allocator, the pool is one ``cudaHostAlloc`` block (cuda-python runtime API), which
  CC supports (~4.9 GiB/s on H200 CC, vLLM issue 55428), wrapped as a tensor of the exact size (torch's
  pinned allocator would round a 180 GB pool up to 256 GiB) and freed with its last view. Storage
  allocators (mooncake, shm, ...) own their memory, and cudaHostAlloc can fail (no cuda-python, out of
  pinnable memory): then the allocator's pageable buffer is used unregistered, which the ``direct``
  backend copies correctly (torch copies stage pageable memory; under CC every copy goes through the
  bounce buffer anyway). Either way ``cudaHostRegister`` is never called, SGLang's ``destroy()`` does not
  unregister our buffers, 0.5.2x's ``make_kernel_ptr_table`` asks no device alias for them (sgl_kernel's
  accessor fails on unmapped memory; only the kernel backend reads those tables), and one log line says
  which allocation was made and why.
* ``sglang.hicache_io_backend``: server-argument resolution switches ``kernel`` to ``direct`` before
  SGLang's own layout rules run (they then turn ``page_first`` into ``page_first_direct``), with a
  warning naming the reason. ``kernel_ascend`` (NPU) and ``direct`` are left alone.

Versions (read from the wheels): HiCache with ``cudaHostRegister`` predates 0.5.12 (the oldest SGLang
cc_runtime supports); ``ALLOC_MEMORY_FUNCS`` lives in ``mem_cache/memory_pool_host.py`` in 0.5.12 -
0.5.13 (``sglang.hicache_host_pool_inline``) and in ``mem_cache/pool_host/common.py`` from 0.5.14
(``sglang.hicache_host_pool``; ``_cuda_host_unregister`` too); layout/IO resolution is
``ServerArgs._resolve_layout_io_compatibility`` up to 0.5.18 and
``arg_groups/hicache_hook.resolve_layout_io_compatibility`` from 0.5.19 (found at apply time). A
patch whose patch points are missing is skipped with the reason.

What stays, and why:
* HiSparse (``managers/hisparse_coordinator.py``) hard-codes ``io_backend="kernel"``: its pools get CC
  memory from this patch, but its transfers still need UVA; not rerouted (no direct path exists there).
* ``srt/layers/engram.py`` and ``multimodal_gen`` (diffusion runtime) call ``cudaHostRegister`` on their
  own buffers (memfd mappings shared across processes): not HiCache, not covered; they still fail with
  801 under CC.
* ROCm (``hipHostMalloc``/``hipHostRegister`` paths) is not CC and is passed through.

Related upstream: none open for SGLang; vLLM issue 55428 / PR 57415 did the same for vLLM's offload.
"""

from __future__ import annotations

import ctypes
import logging
import math
import sys
import threading
import weakref
from typing import Any

from ..patching import Patch, PatchContext

log = logging.getLogger("cc_runtime.patches.sglang_hicache")

POOL_MODULE = "sglang.srt.mem_cache.pool_host.common"  # 0.5.14+
POOL_MODULE_INLINE = "sglang.srt.mem_cache.memory_pool_host"  # 0.5.12 - 0.5.13
ARGS_MODULE = "sglang.srt.server_args"
HOOK_MODULE = "sglang.srt.arg_groups.hicache_hook"  # 0.5.19+
SOURCE = "cc_runtime.sglang_hicache"  # who declared a resolution, in SGLang's resolution records
_RANGES_ATTR = "_sglang_cuda_host_registered_ranges"  # 0.5.20+: what destroy() unregisters

# Base pointers of the buffers this patch handed out; SGLang's destroy() must not unregister them.
_ours: dict[int, int] = {}
_ours_lock = threading.Lock()
_logged: set[str] = set()


def _log_once(key: str, level: int, msg: str, *args: Any) -> None:
    if key not in _logged:
        _logged.add(key)
        log.log(level, msg, *args)


# -- pinned host memory that CC allows ---------------------------------------------------------------
def _cudart() -> Any:
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as runtime  # type: ignore[no-redef]  # older cuda-python
    return runtime


def cuda_host_alloc(nbytes: int) -> tuple[int, Any]:
    """``cudaHostAlloc`` (portable) through cuda-python: (pointer, free function). Raises on failure."""
    rt = _cudart()
    flags = getattr(rt, "cudaHostAllocPortable", 1)
    err, ptr = rt.cudaHostAlloc(nbytes, flags)
    if int(err) != 0:
        raise RuntimeError(f"cudaHostAlloc({nbytes}) failed: {err}")

    def free(p: int = int(ptr)) -> None:
        (rc,) = rt.cudaFreeHost(p)
        if int(rc) != 0:
            log.warning("cc_runtime: cudaFreeHost(%#x) failed: %s", p, rc)

    return int(ptr), free


def pinned_host_tensor(dims: tuple[int, ...], dtype: Any) -> Any:
    """A tensor of exactly ``dims`` over one cudaHostAlloc block, freed with its last view."""
    import torch

    numel = math.prod(dims)
    if numel == 0:
        return torch.empty(dims, dtype=dtype)  # nothing to pin (e.g. a conv-only model's empty state pool)
    nbytes = numel * torch.empty(0, dtype=dtype).element_size()
    ptr, free = cuda_host_alloc(nbytes)
    try:
        array = (ctypes.c_uint8 * nbytes).from_address(ptr)
        buffer = torch.frombuffer(array, dtype=dtype, count=numel).reshape(dims)
    except BaseException:
        free()
        raise
    with _ours_lock:
        _ours[ptr] = nbytes

    def release() -> None:
        with _ours_lock:
            _ours.pop(ptr, None)
        free()

    fin = weakref.finalize(array, release)
    fin.atexit = False  # at interpreter exit the driver reclaims it
    return buffer


def _base_ptr(t: Any) -> int:
    """The allocation a tensor (or a view of it) lives in."""
    try:
        return int(t.untyped_storage().data_ptr())
    except Exception:  # noqa: BLE001 - not a torch tensor: its own pointer
        return int(t.data_ptr())


def _mark_unregistered(buffer: Any) -> None:
    with _ours_lock:
        _ours.setdefault(_base_ptr(buffer), buffer.numel() * buffer.element_size())
    try:
        setattr(buffer, _RANGES_ATTR, [])  # 0.5.20+: destroy() has nothing to unregister
    except Exception:  # noqa: BLE001,S110 - an allocator's tensor subclass without __dict__
        pass


def is_ours(buffer: Any) -> bool:
    """Whether ``buffer`` (or the pool it is a view of) came from this patch, i.e. was never registered."""
    with _ours_lock:
        return _base_ptr(buffer) in _ours


def _is_default_allocator(allocator: Any, module: Any) -> bool:
    base = getattr(module, "HostTensorAllocator", None)
    return base is not None and type(allocator) is base


def _cc_alloc(original: Any, module: Any) -> Any:
    """SGLang's ``alloc_with_host_register`` without cudaHostRegister (same signature, any version)."""

    def alloc_with_host_register(dims: Any, dtype: Any, device: Any, pin_memory: Any, allocator: Any,
                                 *args: Any, **kwargs: Any) -> Any:
        import torch

        if not pin_memory or torch.version.hip is not None:
            return original(dims, dtype, device, pin_memory, allocator, *args, **kwargs)
        dims = tuple(dims)
        if _is_default_allocator(allocator, module):
            try:
                buffer = pinned_host_tensor(dims, dtype)
            except Exception as exc:  # noqa: BLE001 - pageable memory still works with the direct backend
                reason = f"cudaHostAlloc unavailable ({type(exc).__name__}: {exc})"
            else:
                _log_once("pinned", logging.INFO,
                          "cc_runtime: CC refuses cudaHostRegister (error 801): HiCache host pools are "
                          "allocated with cudaHostAlloc instead (first pool: %.2f GB)",
                          buffer.numel() * buffer.element_size() / 1e9)
                return buffer
        else:
            reason = f"the {type(allocator).__name__} storage allocator owns the pool's memory"
        buffer = allocator.allocate(dims, dtype=dtype, device=device)
        _mark_unregistered(buffer)
        _log_once(f"pageable:{reason}", logging.WARNING,
                  "cc_runtime: CC refuses cudaHostRegister (error 801) and %s: HiCache host pools stay "
                  "pageable and unregistered (correct with the direct IO backend; copies are staged)", reason)
        return buffer

    alloc_with_host_register.__wrapped__ = original  # type: ignore[attr-defined]
    alloc_with_host_register.__doc__ = original.__doc__
    return alloc_with_host_register


def _skip_ours(original: Any) -> Any:
    def _cuda_host_unregister(buffer: Any, *args: Any, **kwargs: Any) -> Any:
        if is_ours(buffer):
            return None  # never registered: nothing to undo
        return original(buffer, *args, **kwargs)

    _cuda_host_unregister.__wrapped__ = original  # type: ignore[attr-defined]
    return _cuda_host_unregister


def _plain_ptr_table(original: Any) -> Any:
    """0.5.2x ``make_kernel_ptr_table``: our pools were never registered, so no device alias is asked for
    (sgl_kernel's accessor fails on unmapped memory); raw addresses, as upstream uses without the accessor.
    Only the kernel IO backend reads these tables, and under CC it is steered to direct."""

    def make_kernel_ptr_table(tensors: Any, target_device: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("host_memory_registered") and any(is_ours(t) for t in tensors):
            kwargs["host_memory_registered"] = False
        return original(tensors, target_device, *args, **kwargs)

    make_kernel_ptr_table.__wrapped__ = original  # type: ignore[attr-defined]
    return make_kernel_ptr_table


def _replace_dict_values(ctx: PatchContext, table: Any, old: Any, new: Any) -> None:
    """Entries already materialised in ``ALLOC_MEMORY_FUNCS`` (a defaultdict caches its defaults)."""
    keys = [k for k, v in table.items() if v is old]
    for k in keys:
        table[k] = new

    def undo() -> None:
        for k in keys:
            if table.get(k) is new:
                table[k] = old

    ctx.on_revert(undo)


def _apply_host_pool(ctx: PatchContext, module_name: str = POOL_MODULE) -> None:
    pool_mod = sys.modules.get(module_name)
    table = getattr(pool_mod, "ALLOC_MEMORY_FUNCS", None)
    factory = getattr(table, "default_factory", None)
    if table is None or factory is None:
        raise RuntimeError(f"{module_name}.ALLOC_MEMORY_FUNCS (a defaultdict) not found (patch point moved)")
    module = sys.modules.get(getattr(factory, "__module__", ""), None)
    original = getattr(module, "alloc_with_host_register", None)
    if module is None or not callable(original):
        raise RuntimeError("alloc_with_host_register not found next to ALLOC_MEMORY_FUNCS (patch point moved)")
    if factory() is not original:
        raise RuntimeError("ALLOC_MEMORY_FUNCS no longer defaults to alloc_with_host_register (upstream changed)")
    new = _cc_alloc(original, module)
    ctx.replace(module, "alloc_with_host_register", new, rebind=True)
    _replace_dict_values(ctx, table, original, new)
    if callable(getattr(module, "_cuda_host_unregister", None)):  # 0.5.14+: HostKVCache.destroy()
        ctx.replace(module, "_cuda_host_unregister", _skip_ours(module._cuda_host_unregister), rebind=True)
    if callable(getattr(module, "make_kernel_ptr_table", None)):  # 0.5.2x: device aliases of host pools
        ctx.replace(module, "make_kernel_ptr_table", _plain_ptr_table(module.make_kernel_ptr_table), rebind=True)
    ctx.on_revert(_logged.clear)


# -- IO backend ----------------------------------------------------------------------------------
_STEER_MSG = ("cc_runtime: --hicache-io-backend kernel reads host KV pools from device kernels through "
              "UVA, which CC does not give a kernel (stale views, vLLM issue 57224): using direct")


def _steer_method(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """0.5.12 - 0.5.18: ``ServerArgs._resolve_layout_io_compatibility(self)``."""
    if getattr(instance, "hicache_io_backend", None) == "kernel":
        instance.hicache_io_backend = "direct"
        log.warning(_STEER_MSG)
    return wrapped(*args, **kwargs)


def _steer_function(hook_mod: Any) -> Any:
    """0.5.19+: ``resolve_layout_io_compatibility(server_args)``, resolutions declared, not assigned."""

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        server_args = args[0] if args else kwargs["server_args"]
        if hook_mod.resolving_view(server_args).hicache_io_backend == "kernel":
            hook_mod.declare_resolution(server_args, SOURCE, hicache_io_backend="direct")
            log.warning(_STEER_MSG)
        return wrapped(*args, **kwargs)

    return wrapper


def _apply_io_backend(ctx: PatchContext) -> None:
    import importlib

    args_mod = sys.modules[ARGS_MODULE]
    server_args = getattr(args_mod, "ServerArgs", None)
    if server_args is not None and callable(getattr(server_args, "_resolve_layout_io_compatibility", None)):
        ctx.wrap(server_args, "_resolve_layout_io_compatibility", _steer_method)
        return
    try:
        hook_mod = importlib.import_module(HOOK_MODULE)
    except ImportError as exc:
        raise RuntimeError(f"no HiCache layout/IO resolution found in {ARGS_MODULE} or {HOOK_MODULE}") from exc
    for name in ("resolve_layout_io_compatibility", "resolving_view", "declare_resolution"):
        if not callable(getattr(hook_mod, name, None)):
            raise RuntimeError(f"{HOOK_MODULE}.{name} not found (patch point moved)")
    ctx.wrap(hook_mod, "resolve_layout_io_compatibility", _steer_function(hook_mod))


PATCHES = [
    Patch(
        name="sglang.hicache_host_pool",
        family="sglang.hicache_host_pool",  # version-specific variants of one fix (strict mode)
        target="sglang",
        versions=">=0.5.14,<0.5.24",
        summary="HiCache host KV pools from cudaHostAlloc (or pageable), never cudaHostRegister (801 under CC)",
        upstream="vLLM issue 55428 (cudaHostRegister 801 under CC; cudaHostAlloc works); no SGLang PR",
        apply=_apply_host_pool,
        module=POOL_MODULE,
        why="--enable-hierarchical-cache cannot start under CC: cudaHostRegister fails with error 801",
    ),
    Patch(
        name="sglang.hicache_host_pool_inline",
        family="sglang.hicache_host_pool",  # version-specific variants of one fix (strict mode)
        target="sglang",
        versions=">=0.5.12,<0.5.14",
        summary="HiCache host KV pools from cudaHostAlloc (or pageable), never cudaHostRegister (801 under CC)",
        upstream="vLLM issue 55428 (cudaHostRegister 801 under CC; cudaHostAlloc works); no SGLang PR",
        apply=lambda ctx: _apply_host_pool(ctx, POOL_MODULE_INLINE),
        module=POOL_MODULE_INLINE,
        why="under CC cudaHostRegister fails with 801: 0.5.13 refuses to start, 0.5.12 runs unpinned with "
            "a pending CUDA error",
    ),
    Patch(
        name="sglang.hicache_io_backend",
        target="sglang",
        versions=">=0.5.12,<0.5.24",
        summary="--hicache-io-backend kernel -> direct (kernels cannot read host memory through UVA under CC)",
        upstream="vLLM issue 57224 / PR 57415 (stale UVA views under CC); no SGLang PR",
        apply=_apply_io_backend,
        module=ARGS_MODULE,
        why="the kernel IO backend reads host pools through UVA pointers, which CC does not provide",
    ),
]
