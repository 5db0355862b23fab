"""Which bytes go into which chunk: the load plan, made from the headers before any byte moves.

A chunk is one host buffer filled from one file and moved with one host-to-device copy. Tensors are
packed into chunks in file order; a tensor larger than the room left is split across chunks (each
piece lands at its own offset of the output tensor). Chunks never span files, so a load of ``B``
bytes from ``F`` files in chunks of ``C`` bytes makes at most ``ceil(B / C) + F`` crossings.

Row selection (tensor parallelism): a tensor whose kept rows are ``[start, stop)`` of dimension 0 is a
contiguous byte range, so only those rows are read and moved. Any other shard is not a contiguous
range: such a tensor is read whole and the caller narrows it on the device (as upstream does).
With ``in_place``, a row-selected tensor is handed out at its full shape with the kept rows at their
own offset (the rest poisoned by the loader), for callers that narrow what they are given themselves
(SGLang's weight_loaders); only the kept rows are read and moved either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from .header import CheckpointError, FileIndex

__all__ = ["Chunk", "Piece", "Plan", "Wanted", "make_plan"]


@dataclass(frozen=True)
class Wanted:
    """One output tensor: what the caller gets (dtype, shape) and where its bytes lie in the file."""

    key: int
    name: str
    path: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute file offset of the first byte wanted
    nbytes: int
    rows: tuple[int, int] | None = None  # the dim-0 rows kept, when a selection was given
    #: In place: the full tensor is handed out, ``nbytes`` read go at ``out_offset`` of ``out_nbytes``.
    out_shape: tuple[int, ...] | None = None
    out_offset: int = 0
    out_nbytes: int | None = None

    @property
    def hand_out_shape(self) -> tuple[int, ...]:
        return self.out_shape if self.out_shape is not None else self.shape

    @property
    def hand_out_nbytes(self) -> int:
        return self.out_nbytes if self.out_nbytes is not None else self.nbytes

    @property
    def partial(self) -> bool:
        """Handed out larger than what is read: the bytes outside the rows are not the file's."""
        return self.hand_out_nbytes != self.nbytes


@dataclass(frozen=True)
class Piece:
    key: int
    tensor_offset: int
    chunk_offset: int
    nbytes: int


@dataclass
class Chunk:
    index: int
    path: str
    #: (file offset, bytes, offset in the chunk): coalesced reads, in file order.
    reads: list[tuple[int, int, int]] = field(default_factory=list)
    pieces: list[Piece] = field(default_factory=list)
    #: Keys of the tensors whose last byte is in this chunk, in order: ready once it has been copied.
    done: list[int] = field(default_factory=list)
    nbytes: int = 0


@dataclass
class Plan:
    chunk_bytes: int
    wanted: list[Wanted]
    chunks: list[Chunk]
    files: list[str]

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.wanted)

    def crossing_bound(self) -> int:
        """``ceil(bytes / chunk) + files``: the most host-to-device copies this plan may make."""
        return math.ceil(self.nbytes / self.chunk_bytes) + len(self.files)

    def first_name(self, chunk: Chunk) -> str | None:
        """The first tensor a chunk carries bytes of (for error messages)."""
        return self.wanted[chunk.pieces[0].key].name if chunk.pieces else None


def select(indexes: Iterable[FileIndex], names: Iterable[str] | None = None,
           rows: Mapping[str, tuple[int, int]] | None = None, in_place: bool = False) -> list[Wanted]:
    """The tensors to load, in file order. ``names``: only these (None: all); ``rows``: dim-0 row ranges
    (``in_place``: handed out at full shape, see the module docstring)."""
    keep = None if names is None else set(names)
    rows = rows or {}
    out: list[Wanted] = []
    for ix in indexes:
        for t in ix.tensors:
            if keep is not None and t.name not in keep:
                continue
            r = rows.get(t.name)
            if r is None:
                out.append(Wanted(len(out), t.name, ix.path, t.dtype, t.shape, t.begin, t.nbytes))
                continue
            start, stop = r
            if not t.shape or not 0 <= start <= stop <= t.shape[0]:
                raise CheckpointError(ix.path, f"rows [{start}, {stop}) outside shape {list(t.shape)}", t.name)
            row_bytes = t.nbytes // t.shape[0] if t.shape[0] else 0
            w = Wanted(len(out), t.name, ix.path, t.dtype, (stop - start, *t.shape[1:]),
                       t.begin + start * row_bytes, (stop - start) * row_bytes, (start, stop))
            if in_place:
                w = replace(w, out_shape=t.shape, out_offset=start * row_bytes, out_nbytes=t.nbytes)
            out.append(w)
    if keep is not None:
        missing = keep - {w.name for w in out}
        if missing:
            raise CheckpointError(", ".join(ix.path for ix in indexes) or "(no files)",
                                  "tensor not found in any file", sorted(missing)[0])
    return out


def make_plan(indexes: list[FileIndex], chunk_bytes: int, names: Iterable[str] | None = None,
              rows: Mapping[str, tuple[int, int]] | None = None, in_place: bool = False) -> Plan:
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be > 0, got {chunk_bytes}")
    wanted = select(indexes, names, rows, in_place)
    chunks: list[Chunk] = []
    cur: Chunk | None = None
    for w in wanted:
        if cur is not None and cur.path != w.path:
            cur = None  # chunks never span files
        done_at = 0
        left = w.nbytes
        if left == 0:  # an empty tensor rides on the current chunk (or a new empty one)
            if cur is None:
                cur = Chunk(len(chunks), w.path)
                chunks.append(cur)
            cur.done.append(w.key)
            continue
        while left:
            if cur is None or cur.nbytes == chunk_bytes:
                cur = Chunk(len(chunks), w.path)
                chunks.append(cur)
            n = min(left, chunk_bytes - cur.nbytes)
            file_off = w.begin + done_at
            last = cur.reads[-1] if cur.reads else None
            if last is not None and last[0] + last[1] == file_off and last[2] + last[1] == cur.nbytes:
                cur.reads[-1] = (last[0], last[1] + n, last[2])  # contiguous on disk: one read
            else:
                cur.reads.append((file_off, n, cur.nbytes))
            cur.pieces.append(Piece(w.key, done_at, cur.nbytes, n))
            cur.nbytes += n
            done_at += n
            left -= n
        assert cur is not None  # left > 0 made or reused a chunk
        cur.done.append(w.key)
    files = list(dict.fromkeys(ix.path for ix in indexes))
    return Plan(chunk_bytes, wanted, chunks, files)
