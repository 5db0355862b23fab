"""Tensors that alias memory without owning it (vLLM's ``weak_ref_tensors``, in pure torch).

A captured graph keeps writing to the addresses it was captured with; holding the capture-time output
tensors alive would pin that memory in the pool forever, once per size. A non-owning alias lets the
allocator hand the memory to the next capture (sizes are never replayed concurrently) while the runner
can still return it after a replay. ``torch._C._construct_storage_from_data_pointer`` is what torch's
own cudagraph trees use for this (present from torch 2.1 through 2.14).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("cc_runtime.graphs")
_warned = False


def weak_ref_tensor(t: Any) -> Any:
    """A tensor viewing ``t``'s memory without keeping it alive; ``t`` itself if that is not possible."""
    import torch

    global _warned
    if not isinstance(t, torch.Tensor):
        return t
    construct = getattr(torch._C, "_construct_storage_from_data_pointer", None)
    if construct is None:
        if not _warned:
            _warned = True
            log.warning("cc_runtime: this torch cannot alias storage weakly; graph outputs stay pinned")
        return t
    storage = t.untyped_storage()
    alias = construct(storage.data_ptr(), t.device, storage.nbytes())
    return torch.empty((0,), dtype=t.dtype, device=t.device).set_(alias, t.storage_offset(), t.size(), t.stride())


def weak_ref_tensors(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(weak_ref_tensors(v) for v in value)
    if isinstance(value, list):
        return [weak_ref_tensors(v) for v in value]
    return weak_ref_tensor(value)
