"""FlashInfer allreduce + RMSNorm fusion in SGLang under CC, on the multicast-free IPC workspace (opt-in).

EXPERIMENTAL: needs multi-GPU CC hardware to verify. Applies only when ``sglang.allreduce_fusion_ipc`` is
named in ``CC_RUNTIME_PATCHES`` (``Patch.opt_in``); until a multi-GPU CC machine has run it, its numbers
and its correctness there are unmeasured.

Why: SGLang's fusion preflight (``layers/flashinfer_comm_fusion.py::_preflight_check_workspace_memory``,
0.5.12 and 0.5.23 alike) sizes the workspace with ``cuMulticastGetGranularity`` unconditionally.
Multicast is unavailable under CC (SGLang issue 30364, PR 31447), so the preflight fails, every rank
votes "skip", and the fused allreduce + residual + RMSNorm is silently off for every TP run. FlashInfer's
TRT-LLM fusion does not need multicast: its IPC workspace (``trtllm_create_ipc_workspace_for_all_reduce_
fusion(..., use_symm_dev_mem=False)``) is what SGLang PR 31447 builds on, and FlashInfer 0.7.2 itself picks
``use_symm_dev_mem = not is_confidential_compute()``.

How (through PatchContext; ``cc_runtime.deactivate()`` restores every object):

* ``_preflight_check_workspace_memory`` is replaced under CC by the same collective decision without
  multicast: each rank probes the allocations the IPC workspace makes (FlashInfer's three buffers, 16-byte
  aligned, rounded to the recommended allocation granularity, POSIX-fd handles, ``cuMemCreate`` then
  ``cuMemRelease``), then all ranks vote on the CPU group (``BAND``) so they enter or skip workspace creation
  together, exactly as upstream's preflight does. A failing probe or vote logs its reason and returns
  False: SGLang then marks the fusion unavailable and runs the unfused allreduce and RMSNorm.
* FlashInfer's ``trtllm_create_ipc_workspace_for_all_reduce_fusion`` (as ``flashinfer.comm.allreduce``
  calls it) always gets ``use_symm_dev_mem=False``; when the caller asked for the symmetric-memory kind
  (FlashInfer 0.6.x hard-codes it; 0.7.x asks whenever its own CC detection says off, e.g. protected PCIe)
  the result is returned in the shape that caller unpacks. If that workspace cannot be made, SGLang's own
  handler turns the fusion off ("Disabling flashinfer allreduce fusion permanently"), and we log why.
* 0.5.23's backend resolution (``_resolve_backend``): ``mnnvl`` (what ``auto`` picks on Blackwell) needs
  NVLink multicast and FlashInfer 0.7.2 rejects it under CC, so single-node runs get ``trtllm``; multi-node
  keeps upstream's answer (``trtllm`` is single-node only) and the fusion stays off there.

What stays, and why: multi-node fusion under CC (no multicast-free multi-node workspace exists); the
CuTe DSL backend (0.5.23 ``cutedsl``: Blackwell multicast); FlashInfer installs whose ``flashinfer.comm``
is not loaded (the fusion is off upstream anyway: nothing to fix).

Upstream: SGLang PR 31447 (open; supersedes PR 28251, used by NVIDIA's CC blog); FlashInfer 0.7.2
(``use_symm_dev_mem = not CC``). Retire when PR 31447 ships: ``upstream_has_it`` then sees a preflight
without ``cuMulticastGetGranularity``.
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any

from ..patching import Patch, PatchContext

log = logging.getLogger("cc_runtime.patches.sglang_allreduce_fusion")

FUSION_MODULE = "sglang.srt.layers.flashinfer_comm_fusion"
FI_ALLREDUCE_MODULE = "flashinfer.comm.allreduce"
NAME = "sglang.allreduce_fusion_ipc"

# FlashInfer trtllm_ar constants (0.6.11 - 0.7.2): BarrierFlagCount, MAX_COMM_SIZE.
_BARRIER_FLAG_COUNT = 256
_MAX_COMM_SIZE = 2147483647 & ~((1 << 21) - 1)
_SIGNAL_PAD_BYTES = 2048  # torch symmetric memory's per-buffer signal pad (as SGLang's preflight assumes)

#: What the patch decided last (for logs, ``doctor`` and tests): preflight path and workspace kind.
DECISIONS: list[dict[str, Any]] = []


def _round_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def ipc_workspace_sizes(world_size: int, max_token_num: int, hidden_dim: int, dtype: Any) -> list[int]:
    """The three buffers ``trtllm_create_ipc_workspace_for_all_reduce_fusion`` allocates, in bytes."""
    import torch

    wide = 4 if dtype == torch.float32 else 2  # use_fp32_lamport follows the dtype (FlashInfer's workspace)
    buffer_size = world_size * max_token_num * hidden_dim * wide
    flag_size = world_size * _BARRIER_FLAG_COUNT * 4
    lamport = min(world_size * max_token_num * hidden_dim * wide, _MAX_COMM_SIZE)
    return [_round_up(s, 16) for s in (buffer_size, flag_size, 3 * lamport)]


def _ok(driver: Any, err: Any) -> bool:
    return bool(err == driver.CUresult.CUDA_SUCCESS)


def probe_ipc_workspace(driver: Any, sizes: list[int], device: int) -> str | None:
    """None when this rank can make the IPC workspace's allocations, else the reason. No multicast calls."""
    prop = driver.CUmemAllocationProp()
    prop.requestedHandleTypes = driver.CUmemAllocationHandleType.CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
    prop.type = driver.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
    prop.location = driver.CUmemLocation()
    prop.location.type = driver.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    prop.location.id = device
    err, granularity = driver.cuMemGetAllocationGranularity(
        prop, driver.CUmemAllocationGranularity_flags.CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)
    if not _ok(driver, err):
        return f"cuMemGetAllocationGranularity failed: {err}"
    handles = []
    try:
        for size in sizes:
            nbytes = _round_up(size + _SIGNAL_PAD_BYTES, int(granularity))
            err, handle = driver.cuMemCreate(nbytes, prop, 0)
            if not _ok(driver, err):
                return f"cuMemCreate({nbytes}) failed: {err}"
            handles.append(handle)
    finally:
        for handle in reversed(handles):
            driver.cuMemRelease(handle)
    return None


def _default_group(fusion: Any) -> Any:
    if hasattr(fusion, "get_parallel"):  # 0.5.2x runtime context
        return fusion.get_parallel().tp_group
    return fusion.get_tp_group()  # 0.5.12


def _cc_preflight(fusion: Any) -> Any:
    def _preflight_check_workspace_memory(world_size: int, max_token_num: int, hidden_dim: int, dtype: Any,
                                          cpu_group: Any = None) -> bool:
        import torch
        import torch.distributed as dist

        group = cpu_group
        if group is None:
            tp = _default_group(fusion)
            if tp.world_size <= 1:
                return True
            group = tp.cpu_group
        try:
            sizes = ipc_workspace_sizes(world_size, max_token_num, hidden_dim, dtype)
            why = probe_ipc_workspace(fusion.get_cuda_driver_bindings(), sizes, torch.cuda.current_device())
        except Exception as exc:  # noqa: BLE001 - any probe failure means "skip", never a crash
            why = f"probe raised {type(exc).__name__}: {exc}"
        flag = torch.tensor([0 if why else 1], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.BAND, group=group)
        proceed = flag.item() == 1
        DECISIONS.append({"preflight": "cc_ipc", "local_ok": why is None, "proceed": proceed, "reason": why})
        if not proceed:
            log.warning("cc_runtime: FlashInfer allreduce fusion stays off under CC: the multicast-free IPC "
                        "workspace cannot be made on %s (%s); using the unfused allreduce + RMSNorm",
                        "this rank" if why else "another rank", why or "vote")
            return False
        log.info("cc_runtime: FlashInfer allreduce fusion preflight passed under CC on the multicast-free IPC "
                 "workspace (no cuMulticastGetGranularity); experimental: needs multi-GPU CC hardware to verify")
        return True

    return _preflight_check_workspace_memory


def _ipc_workspace(original: Any) -> Any:
    def trtllm_create_ipc_workspace_for_all_reduce_fusion(*args: Any, **kwargs: Any) -> Any:
        requested = bool(kwargs.get("use_symm_dev_mem", False))
        kwargs["use_symm_dev_mem"] = False
        DECISIONS.append({"workspace": "ipc", "use_symm_dev_mem": False, "caller_requested": requested})
        try:
            result = original(*args, **kwargs)
        except Exception as exc:
            log.warning("cc_runtime: FlashInfer's multicast-free IPC workspace could not be made (%s: %s); "
                        "SGLang turns the allreduce fusion off and runs it unfused", type(exc).__name__, exc)
            raise
        if requested and kwargs.get("create_metadata") and isinstance(result, tuple) and len(result) == 3:
            ipc_handles, workspace_tensor, metadata = result
            return ipc_handles, workspace_tensor, [], metadata  # the symmetric-memory caller's shape
        return result

    trtllm_create_ipc_workspace_for_all_reduce_fusion.__wrapped__ = original  # type: ignore[attr-defined]
    return trtllm_create_ipc_workspace_for_all_reduce_fusion


def _resolve_backend(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    backend = wrapped(*args, **kwargs)
    multi_node = bool(args[1] if len(args) > 1 else kwargs.get("is_multi_node", False))
    if backend == "mnnvl" and not multi_node:
        log.warning("cc_runtime: FlashInfer allreduce fusion backend mnnvl needs NVLink multicast, which CC "
                    "does not provide: using trtllm (multicast-free IPC workspace)")
        return "trtllm"
    return backend


def _preflight_uses_multicast() -> bool:
    fusion = sys.modules[FUSION_MODULE]
    try:
        src = inspect.getsource(fusion)
    except (OSError, TypeError):
        return True  # cannot tell: assume the preflight that needs the fix
    return "cuMulticastGetGranularity" in src


def _upstream_has_it() -> str | None:
    if not _preflight_uses_multicast():
        return "SGLang's fusion preflight no longer calls cuMulticastGetGranularity (PR 31447 or later)"
    try:
        cc_aware = "is_confidential_compute" in inspect.getsource(sys.modules[FUSION_MODULE])
    except (OSError, TypeError):
        cc_aware = False
    if cc_aware:
        return "SGLang's fusion module checks is_confidential_compute itself (PR 31447 or later)"
    return None


def _apply(ctx: PatchContext) -> None:
    fusion = sys.modules[FUSION_MODULE]
    for name in ("_preflight_check_workspace_memory", "FlashInferWorkspaceManager", "get_cuda_driver_bindings"):
        if getattr(fusion, name, None) is None:
            raise RuntimeError(f"{FUSION_MODULE}.{name} not found (patch point moved)")
    if not (hasattr(fusion, "get_parallel") or hasattr(fusion, "get_tp_group")):
        raise RuntimeError(f"{FUSION_MODULE}: no TP group accessor (get_parallel / get_tp_group)")
    fi = sys.modules.get(FI_ALLREDUCE_MODULE)
    if fi is not None:
        create = getattr(fi, "trtllm_create_ipc_workspace_for_all_reduce_fusion", None)
        if create is None or "use_symm_dev_mem" not in inspect.signature(create).parameters:
            raise RuntimeError("this FlashInfer has no multicast-free IPC workspace "
                               "(trtllm_create_ipc_workspace_for_all_reduce_fusion(use_symm_dev_mem=))")
        ctx.replace(fi, "trtllm_create_ipc_workspace_for_all_reduce_fusion", _ipc_workspace(create))
    else:
        log.info("cc_runtime: flashinfer.comm is not loaded in this process (SGLang's fusion is off upstream); "
                 "only SGLang's preflight is patched")
    ctx.replace(fusion, "_preflight_check_workspace_memory", _cc_preflight(fusion))
    if callable(getattr(fusion, "_resolve_backend", None)):  # 0.5.2x: auto -> mnnvl on Blackwell
        ctx.wrap(fusion, "_resolve_backend", _resolve_backend)
    ctx.on_revert(DECISIONS.clear)


PATCHES = [
    Patch(
        name=NAME,
        target="sglang",
        versions=">=0.5.12,<0.5.24",
        summary="experimental: needs multi-GPU CC hardware to verify. FlashInfer allreduce+RMSNorm fusion "
                "under CC on the multicast-free IPC workspace (preflight without cuMulticastGetGranularity)",
        upstream="SGLang PR 31447 (open; supersedes PR 28251); FlashInfer 0.7.2 use_symm_dev_mem = not CC",
        apply=_apply,
        module=FUSION_MODULE,
        upstream_has_it=_upstream_has_it,
        opt_in=True,
        why="the fusion preflight calls cuMulticastGetGranularity, unavailable under CC: fusion silently off",
    ),
]
