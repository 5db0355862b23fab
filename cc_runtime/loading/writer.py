"""Writing safetensors files without the ``safetensors`` package (tests and ``cc-runtime bench load``).

Same layout as the reference writer: 8-byte little-endian header length, the JSON header padded with
spaces to a multiple of 8, then each tensor's bytes in header order, no gaps.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from typing import Any

__all__ = ["dtype_name", "write_index", "write_safetensors"]

_NAMES = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
          "float8_e8m0fnu": "F8_E8M0", "int16": "I16", "uint16": "U16", "float16": "F16", "bfloat16": "BF16",
          "int32": "I32", "uint32": "U32", "float32": "F32", "int64": "I64", "uint64": "U64", "float64": "F64"}


def dtype_name(dtype: Any) -> str:
    return _NAMES[str(dtype).removeprefix("torch.")]


def write_safetensors(path: str, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> int:
    """Write ``tensors`` (CPU torch tensors) to ``path``; returns the data bytes written."""
    import torch

    header: dict[str, Any] = {}
    off = 0
    flat = []
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        n = t.numel() * t.element_size()
        header[name] = {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "data_offsets": [off, off + n]}
        flat.append(t.reshape(-1).view(torch.uint8) if n else None)
        off += n
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in flat:
            if b is not None:
                f.write(memoryview(b.numpy()))
    os.replace(tmp, path)
    return off


def write_index(folder: str, weight_map: Mapping[str, str], total_size: int) -> str:
    """``model.safetensors.index.json`` for a sharded checkpoint."""
    path = os.path.join(folder, "model.safetensors.index.json")
    with open(path, "w") as f:
        json.dump({"metadata": {"total_size": total_size}, "weight_map": dict(weight_map)}, f, indent=1)
    return path
