"""The arms of ``cc-runtime bench load``: who produces the tensors, and how they reach the parameters.

Every arm ends the same way: each tensor is copied into its preallocated device parameter, as a
model's ``weight_loader`` does (``param.data.copy_(loaded_weight)``). What differs is the iterator:

* ``upstream``: SGLang's ``safetensors_weights_iterator`` when SGLang imports here, otherwise a
  stand-in that does what it does (map the file, yield one CPU tensor per name): the copy into the
  parameter is then one pageable host-to-device crossing per tensor;
* ``multi_thread`` / ``buffered``: SGLang's multi-threaded iterators (only where SGLang imports);
* ``cc_runtime``: :class:`cc_runtime.loading.ChunkedLoader`: the copy into the parameter is a
  device-to-device copy.

On the simulated device (``--device cpu``) the copies go through ``SimDevice.copy_`` (charged and
counted by it); on a GPU they are plain torch copies, charged and counted by the GPU emulator's hooks.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator
from typing import Any

from ..loading import ChunkedLoader, read_header, resolve_files
from ..loading.transport import SimTransport, torch_dtype

__all__ = ["ITERATORS", "NOT_RUN", "iterator_for", "sglang_iterators"]

#: Peers that cannot be charged by a torch-level emulator, with the reason (listed, not run).
NOT_RUN = {
    "fastsafetensors": "copies through its own CUDA calls (cudaMemcpy from its own buffers, GDS where "
                       "available): the torch-level emulator cannot see or charge them; GPUDirect Storage "
                       "is unavailable under CC",
    "runai_streamer": "runai-model-streamer is not installed in this environment (it yields CPU tensors; "
                      "the weight_loader's copy would cross per tensor as upstream's does)",
}


def sglang_iterators() -> dict[str, Callable[..., Iterator[tuple[str, Any]]]] | str:
    """SGLang's iterators by arm name, or why they cannot be imported."""
    try:
        from sglang.srt.model_loader import weight_utils as wu
    except Exception as exc:  # noqa: BLE001 - any import failure means: stand-in arm
        return f"sglang not importable ({type(exc).__name__}: {str(exc)[:120]})"
    found: dict[str, Callable[..., Iterator[tuple[str, Any]]]] = {"upstream": wu.safetensors_weights_iterator}
    if hasattr(wu, "multi_thread_safetensors_weights_iterator"):  # 0.5.12
        found["multi_thread"] = lambda files: wu.multi_thread_safetensors_weights_iterator(files, max_workers=8)
    if hasattr(wu, "buffered_multi_thread_safetensors_weights_iterator"):
        found["buffered"] = lambda files: wu.buffered_multi_thread_safetensors_weights_iterator(files, max_workers=8)
    return found


def standin_iterator(files: list[str]) -> Iterator[tuple[str, Any]]:
    """What SGLang's ``safetensors_weights_iterator`` does, in plain torch: per file, map it and yield
    one CPU tensor (a view of the mapping) per name, in name order (safetensors' ``keys()``)."""
    import torch

    for path in files:
        ix = read_header(path)
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # writable view: no torch warning, never written
        buf = torch.frombuffer(memoryview(mm), dtype=torch.uint8) if ix.size else None
        for t in sorted(ix.tensors, key=lambda e: e.name):
            raw = buf[t.begin:t.end] if buf is not None else torch.empty(0, dtype=torch.uint8)
            yield t.name, raw.view(torch_dtype(t.dtype)).view(t.shape)
        del buf


ITERATORS = ("upstream", "multi_thread", "buffered", "cc_runtime")


def file_tensors(folder: str) -> Iterator[tuple[str, Any]]:
    """Every tensor of the checkpoint as a CPU tensor (views of the mapped files; clone to keep)."""
    return standin_iterator(resolve_files(folder))


def iterator_for(arm: str, folder: str, device: Any, sim: Any, chunk_bytes: int) -> tuple[Iterator[Any], str, Any]:
    """(iterator, label, loader or None) for one arm."""
    files = resolve_files(folder)
    if arm == "cc_runtime":
        loader = ChunkedLoader(folder, SimTransport(sim) if sim is not None else device, chunk_bytes=chunk_bytes)
        return iter(loader), "cc_runtime.loading.ChunkedLoader", loader
    found = sglang_iterators()
    if isinstance(found, dict) and arm in found:
        return found[arm](files), f"sglang weight_utils ({arm})", None
    if arm == "upstream":
        return standin_iterator(files), "plain-torch stand-in of SGLang's safetensors_weights_iterator", None
    raise LookupError(found if isinstance(found, str) else f"this SGLang has no {arm} iterator")


def consume(it: Iterator[tuple[str, Any]], params: dict[str, Any], sim: Any) -> int:
    """Copy every tensor into its parameter as a weight_loader does; returns how many."""
    n = 0
    if sim is not None:
        copy_, is_device, mark_pageable = sim.copy_, sim.is_device, sim.mark_pageable
        for name, w in it:
            if is_device(w):
                copy_(params[name], w, non_blocking=True, inline_if_idle=True)  # D2D, in stream order
            else:
                copy_(params[name], mark_pageable(w))  # mmap'd / CPU memory is pageable
            n += 1
        sim.synchronize()
        return n
    import torch

    for name, w in it:
        params[name].copy_(w)
        n += 1
    torch.cuda.synchronize()
    return n


def allocate(folder: str, device: Any, sim: Any) -> dict[str, Any]:
    import torch

    params = {}
    for path in resolve_files(folder):
        for t in read_header(path).tensors:
            dt = torch_dtype(t.dtype)
            params[t.name] = sim.empty(t.shape, dtype=dt) if sim is not None else torch.empty(t.shape, dtype=dt,
                                                                                              device=device)
    return params


def poison(params: dict[str, Any]) -> None:
    """Fill every parameter with 0xA5 so that a byte an arm failed to write cannot pass the comparison."""
    import torch

    for p in params.values():
        p.view(torch.uint8).fill_(0xA5)


def compare(folder: str, params: dict[str, Any], device: Any) -> int:
    """How many parameters differ from the file's bytes (0: every byte identical)."""
    import torch

    bad = 0
    for path in resolve_files(folder):
        ix = read_header(path)
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # writable view: no torch warning, never written
        try:
            buf = torch.frombuffer(memoryview(mm), dtype=torch.uint8)
            for t in ix.tensors:
                ref = buf[t.begin:t.end]
                got = params[t.name].reshape(-1).view(torch.uint8)
                if device is not None and str(device).startswith("cuda"):
                    ref = ref.to(device)
                if not torch.equal(got, ref):
                    bad += 1
            del buf, ref, got
        finally:
            try:
                mm.close()
            except BufferError:
                pass
    return bad
