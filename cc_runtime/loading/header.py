"""Reading a safetensors file's header: where each tensor's bytes are, checked before any byte moves.

The format (https://github.com/huggingface/safetensors, "Format"): 8 bytes little-endian ``N``, then
``N`` bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
then the data; offsets are relative to the first data byte. Parsing it is a few lines of stdlib, so
cc_runtime does not depend on the ``safetensors`` package (which would only parse this header here).

Every check runs up front, for every file, before a loader moves any byte: a truncated file, a corrupt
header or a missing shard fails the whole load with one :class:`CheckpointError` that names the file
and the tensor, so no model is ever half-loaded silently.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["DTYPE_SIZES", "CheckpointError", "FileIndex", "TensorEntry", "read_header", "resolve_files"]

#: Element size of every dtype name the format defines (torch may lack some; see ``torch_dtype``).
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
#: A header larger than this is refused as corrupt (the reference implementation's limit is 100 MB).
MAX_HEADER_BYTES = 100_000_000


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded as written; names the file and, where known, the tensor."""

    def __init__(self, path: str, what: str, tensor: str | None = None) -> None:
        where = f"{path}" + (f", tensor {tensor!r}" if tensor else "")
        super().__init__(f"{where}: {what}")
        self.path = path
        self.tensor = tensor


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    #: Absolute byte offsets in the file (header included), ``begin <= end``.
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class FileIndex:
    path: str
    size: int
    data_start: int
    #: Tensors in file order (by offset), as they lie on disk.
    tensors: tuple[TensorEntry, ...]

    @property
    def data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def read_header(path: str) -> FileIndex:
    """Parse and check one file's header against the file's size. Raises CheckpointError."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(path, f"file is {size} bytes: too short for a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(path, f"corrupt header: header length {n} does not fit a {size}-byte file")
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointError(path, f"cannot read: {exc}") from exc
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"corrupt header: not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(path, "corrupt header: not a JSON object")
    data_start = 8 + n
    entries = []
    for name, spec in meta.items():
        if name == "__metadata__":
            continue
        entries.append(_entry(path, name, spec, data_start, size))
    entries.sort(key=lambda e: (e.begin, e.end))
    for a, b in zip(entries, entries[1:], strict=False):
        if b.begin < a.end:
            raise CheckpointError(path, f"corrupt header: overlaps {a.name!r}", b.name)
    return FileIndex(path, size, data_start, tuple(entries))


def _entry(path: str, name: str, spec: object, data_start: int, size: int) -> TensorEntry:
    if not isinstance(spec, dict):
        raise CheckpointError(path, "corrupt header: entry is not an object", name)
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        raise CheckpointError(path, f"unknown dtype {dtype!r}", name)
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise CheckpointError(path, f"corrupt header: shape {shape!r}", name)
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(path, f"corrupt header: data_offsets {offsets!r}", name)
    want = math.prod(shape) * DTYPE_SIZES[dtype]
    if offsets[1] - offsets[0] != want:
        raise CheckpointError(path, f"corrupt header: {offsets[1] - offsets[0]} bytes for shape {shape} "
                                    f"{dtype} ({want} expected)", name)
    begin, end = data_start + offsets[0], data_start + offsets[1]
    if end > size:
        raise CheckpointError(path, f"truncated file: tensor ends at byte {end}, file has {size}", name)
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def resolve_files(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """The ``.safetensors`` files of a checkpoint: a folder (its index's shards, or every
    ``*.safetensors`` in it), one file, or a list of files. A shard the index names but the folder lacks
    is a CheckpointError naming the shard and the first tensor it should hold."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isdir(path):
            return [path]
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.isfile(index):
            return _from_index(path, index)
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise CheckpointError(path, "no .safetensors files in this folder")
        return files
    return [os.fspath(p) for p in source]


def _from_index(folder: str, index: str) -> list[str]:
    try:
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(index, f"unreadable index: {exc}") from exc
    by_file: dict[str, str] = {}
    for tensor, shard in weight_map.items():
        by_file.setdefault(shard, tensor)
    files = []
    for shard, first in sorted(by_file.items()):
        p = os.path.join(folder, shard)
        if not os.path.isfile(p):
            raise CheckpointError(p, "missing shard (named by model.safetensors.index.json)", first)
        files.append(p)
    return files


def check_index(folder: str, indexes: Iterable[FileIndex]) -> None:
    """Every tensor the folder's index maps to a shard is in that shard (else CheckpointError)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.isfile(index):
        return
    with open(index) as f:
        weight_map = json.load(f).get("weight_map", {})
    have = {(os.path.basename(ix.path), t.name) for ix in indexes for t in ix.tensors}
    for tensor, shard in weight_map.items():
        if (shard, tensor) not in have:
            raise CheckpointError(os.path.join(folder, shard), "tensor named by the index is missing from its shard",
                                  tensor)
