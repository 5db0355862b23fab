"""CC-aware weight loading: a safetensors checkpoint reaches the device in a few large crossings.

Under CC every host-to-device copy goes through an encrypted bounce buffer, blocks the issuing thread
and pays a fixed cost; loading one tensor at a time (what engines do) pays it tens of thousands of
times. :class:`ChunkedLoader` reads the files' byte ranges (from the headers' offsets) into a bounded
ring of pinned host chunks, moves each chunk with one copy on a private stream while the next chunk is
read, and hands out every tensor as an owned device tensor copied out of the device chunk.

- :mod:`.header`: the format, checked up front (truncated file, corrupt header, missing shard);
- :mod:`.plan`: which bytes go into which chunk (and dim-0 row selection for tensor parallelism);
- :mod:`.transport`: CUDA, the emulator's simulated device, or plain CPU tensors;
- :mod:`.loader`: the reader / copier / caller pipeline;
- :mod:`.writer`: writes safetensors files (tests and ``cc-runtime bench load``).

Usable from any torch code::

    from cc_runtime.loading import load_safetensors
    for name, tensor in load_safetensors("/models/llama", "cuda"):
        params[name].copy_(tensor)     # a device-to-device copy

Nothing here imports torch at import time.
"""

from __future__ import annotations

from typing import Any

from .header import CheckpointError, FileIndex, TensorEntry, read_header, resolve_files
from .loader import ChunkedLoader, chunk_bytes_setting
from .plan import Plan, make_plan

__all__ = ["CheckpointError", "ChunkedLoader", "FileIndex", "Plan", "TensorEntry", "chunk_bytes_setting",
           "load_file", "load_safetensors", "make_plan", "read_header", "resolve_files"]


def load_safetensors(source: Any, device: Any = None, **kwargs: Any) -> ChunkedLoader:
    """An iterable of ``(name, device tensor)``; see :class:`ChunkedLoader` for the arguments."""
    return ChunkedLoader(source, device, **kwargs)


def load_file(source: Any, device: Any = None, **kwargs: Any) -> dict[str, Any]:
    """The whole checkpoint as ``{name: device tensor}``."""
    return dict(ChunkedLoader(source, device, **kwargs))
