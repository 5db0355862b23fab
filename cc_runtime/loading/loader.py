"""The chunked loader: disk -> bounded ring of pinned host chunks -> one H2D per chunk -> owned tensors.

Three parties, so that reading, crossing and handing out overlap:

* a **reader** thread fills free host chunks from the files (``os.preadv`` straight into the pinned
  buffer, at the offsets the headers give);
* a **copier** thread moves each filled chunk with one host-to-device copy on a private stream into a
  free device chunk (under CC that copy blocks the copier thread, not the caller; the reader meanwhile
  fills the next chunk);
* the **caller** (the iterator) copies each tensor's bytes out of the device chunk into a new device
  tensor of its own (D2D, on a second private stream; small tensors lying back to back share one new
  buffer and one copy, see ``group_below``), then hands it over: the caller's stream waits for that
  copy. Device chunks and host chunks are reused; handed-out tensors never are, so no caller can see
  a reused buffer.

Memory, all bounded: ``host_slots`` pinned host chunks and ``device_slots`` device chunks of
``chunk_bytes`` each (defaults 2 and 2), plus the output tensor being assembled when one is larger
than a chunk. Tensors already handed out belong to the caller. With ``rows_in_place`` a row-selected
tensor's output is its full size (as a whole-tensor load's), though only its rows are read and moved.

Errors: every header is checked before any byte moves (see :mod:`.header`). A failure while reading or
copying a chunk is raised by the iterator where the first tensor of that chunk would be handed out,
as a :class:`~.header.CheckpointError` naming the file and the tensor; tensors handed out before it
are complete. Leaving the iterator early stops both threads.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .header import DTYPE_SIZES, CheckpointError, FileIndex, check_index, read_header, resolve_files
from .plan import Chunk, Piece, Plan, make_plan
from .transport import torch_dtype, transport_for

log = logging.getLogger("cc_runtime.loading")

__all__ = ["ChunkedLoader", "chunk_bytes_setting"]

_POLL_S = 0.1


def chunk_bytes_setting(chunk_mb: int | None = None) -> int:
    """Chunk size in bytes: ``chunk_mb`` > ``CC_RUNTIME_LOAD_CHUNK_MB`` > default (validated there)."""
    from .. import settings

    return int(settings.get("CC_RUNTIME_LOAD_CHUNK_MB", chunk_mb)) << 20


class _Slot:
    __slots__ = ("buf", "event")

    def __init__(self, buf: Any) -> None:
        self.buf = buf
        self.event: Any = None  # the last copy reading this buffer (wait before overwriting)


class _Stopped(Exception):
    pass


class ChunkedLoader:
    """Iterate ``(name, device tensor)`` over a safetensors checkpoint (folder, file or list of files).

    ``device``: a CUDA device, ``"cpu"``, a :class:`~cc_runtime.emulator.SimDevice` or a transport
    (None: CUDA when available). ``names``: only these tensors; ``rows``: ``{name: (start, stop)}``
    dim-0 rows to keep (only those bytes are read and moved). ``chunk_bytes`` overrides the
    ``CC_RUNTIME_LOAD_CHUNK_MB`` setting (for tests; ``chunk_mb`` goes through the setting's checks).
    ``group_below``: whole tensors smaller than this (bytes; 0: never) lying back to back in a chunk
    share one new buffer made by one D2D copy (norms, scales, routers, small experts: one copy and one
    allocation instead of one each); every larger tensor gets a buffer of its own. Either way the
    buffer is new and never reused by the loader; a caller keeping one grouped tensor keeps its group
    (at most a chunk) alive.

    ``rows_in_place``: each row-selected tensor is handed out at its full shape, the kept rows at their
    own offset and every other byte ``POISON`` (a device fill, nothing crosses for it), for callers that
    narrow what they get themselves; anything reading outside the rows sees values that are visibly
    wrong rather than plausibly stale.
    """

    def __init__(self, source: Any, device: Any = None, *, chunk_mb: int | None = None,
                 chunk_bytes: int | None = None, host_slots: int = 2, device_slots: int = 2,
                 names: Sequence[str] | None = None, rows: Mapping[str, tuple[int, int]] | None = None,
                 group_below: int = 1 << 20, rows_in_place: bool = False) -> None:
        self.files = resolve_files(source)
        self.indexes: list[FileIndex] = [read_header(p) for p in self.files]
        if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
            check_index(os.fspath(source), self.indexes)
        self.chunk_bytes = int(chunk_bytes) if chunk_bytes is not None else chunk_bytes_setting(chunk_mb)
        self.plan: Plan = make_plan(self.indexes, self.chunk_bytes, names, rows, rows_in_place)
        for w in self.plan.wanted:
            if torch_dtype(w.dtype) is None:
                raise CheckpointError(w.path, f"dtype {w.dtype} has no torch dtype in this torch", w.name)
        self.transport = transport_for(device)
        self.host_slots = max(1, host_slots)
        self.device_slots = max(1, device_slots)
        self.pinned: bool | None = None
        self.group_below = max(0, int(group_below))

    @property
    def nbytes(self) -> int:
        return self.plan.nbytes

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self._run()

    # -- the pipeline ------------------------------------------------------------------------------
    def _run(self) -> Iterator[tuple[str, Any]]:
        plan, tr = self.plan, self.transport
        chunks = plan.chunks
        if not chunks:
            return
        size = min(self.chunk_bytes, max(c.nbytes for c in chunks)) or 1
        free_host: queue.Queue[_Slot] = queue.Queue()
        for _ in range(min(self.host_slots, len(chunks))):
            buf, pinned = tr.host_chunk(size)
            self.pinned = pinned
            free_host.put(_Slot(buf))
        free_dev: queue.Queue[_Slot] = queue.Queue()
        for _ in range(min(self.device_slots, len(chunks))):
            free_dev.put(_Slot(tr.device_chunk(size)))
        filled: queue.Queue[tuple[Chunk, _Slot | None, BaseException | None]] = queue.Queue()
        ready: queue.Queue[tuple[Chunk, _Slot | None, Any]] = queue.Queue()
        stop = threading.Event()
        reader = threading.Thread(target=self._reader, args=(chunks, free_host, filled, stop),
                                  name="cc_runtime-load-reader", daemon=True)
        copier = threading.Thread(target=self._copier, args=(len(chunks), filled, free_host, free_dev, ready, stop),
                                  name="cc_runtime-load-copier", daemon=True)
        reader.start()
        copier.start()
        outputs: dict[int, Any] = {}
        try:
            for _ in range(len(chunks)):
                chunk, dslot, token = _get(ready, stop)
                if dslot is None:
                    name = plan.first_name(chunk) or "(none)"
                    if isinstance(token, CheckpointError):
                        raise token
                    raise CheckpointError(chunk.path, f"chunk {chunk.index} failed: {type(token).__name__}: "
                                                      f"{token}", name) from token
                tr.d2d_after(token)
                for run in _runs(chunk, plan, self.group_below):
                    if len(run) > 1 and self._copy_group(run, dslot.buf, outputs):
                        continue
                    for p in run:
                        out = outputs.get(p.key)
                        if out is None:
                            out = outputs[p.key] = _new_output(tr, plan.wanted[p.key])
                        at = plan.wanted[p.key].out_offset + p.tensor_offset
                        tr.d2d(out[at:at + p.nbytes], dslot.buf[p.chunk_offset:p.chunk_offset + p.nbytes])
                done = tr.record()
                dslot.event = done
                free_dev.put(dslot)
                for key in chunk.done:
                    w = plan.wanted[key]
                    buf = outputs.pop(key, None)
                    if buf is None:
                        buf = _new_output(tr, w)
                    t = tr.finish(buf.view(torch_dtype(w.dtype)).view(w.hand_out_shape))
                    tr.hand_over(t, done)
                    yield w.name, t
        finally:
            stop.set()
            reader.join(5)
            copier.join(5)
            outputs.clear()

    def _copy_group(self, run: list[Piece], staging: Any, outputs: dict[int, Any]) -> bool:
        """One D2D for a run of small whole tensors lying back to back: a new buffer of their own, each
        tensor a view of it at its file alignment. False (nothing done) where a view would be misaligned."""
        wanted = self.plan.wanted
        start = run[0].chunk_offset
        total = run[-1].chunk_offset + run[-1].nbytes - start
        pad = wanted[run[0].key].begin % 8  # keeps each tensor's offset modulo 8 as it is in the file
        sizes = [DTYPE_SIZES[wanted[p.key].dtype] for p in run]
        if any((pad + p.chunk_offset - start) % size for p, size in zip(run, sizes, strict=True)):
            return False
        group = self.transport.empty(pad + total)
        self.transport.d2d(group[pad:pad + total], staging[start:start + total])
        for p in run:
            off = pad + p.chunk_offset - start
            outputs[p.key] = group[off:off + p.nbytes]
        return True

    def _reader(self, chunks: list[Chunk], free_host: queue.Queue[_Slot],
                filled: queue.Queue[tuple[Chunk, _Slot | None, BaseException | None]], stop: threading.Event) -> None:
        fds: dict[str, int] = {}
        try:
            for chunk in chunks:
                try:
                    slot = _get(free_host, stop)
                except _Stopped:
                    return
                try:
                    if slot.event is not None:
                        self.transport.host_wait(slot.event)  # the last H2D from this buffer is done
                    fd = fds.get(chunk.path)
                    if fd is None:
                        fd = fds[chunk.path] = os.open(chunk.path, os.O_RDONLY)
                    _read_into(fd, chunk, slot.buf, self.plan)
                except BaseException as exc:  # noqa: BLE001 - raised by the iterator at the tensor
                    filled.put((chunk, None, exc))
                    return
                filled.put((chunk, slot, None))
        finally:
            for fd in fds.values():
                os.close(fd)

    def _copier(self, n: int, filled: queue.Queue[tuple[Chunk, _Slot | None, BaseException | None]],
                free_host: queue.Queue[_Slot], free_dev: queue.Queue[_Slot],
                ready: queue.Queue[tuple[Chunk, _Slot | None, Any]], stop: threading.Event) -> None:
        tr = self.transport
        for _ in range(n):
            try:
                chunk, hslot, err = _get(filled, stop)
                if hslot is None:
                    ready.put((chunk, None, err))
                    return
                dslot = _get(free_dev, stop)
            except _Stopped:
                return
            try:
                k = chunk.nbytes
                event = tr.h2d(dslot.buf[:k], hslot.buf[:k], after=dslot.event)
            except BaseException as exc:  # noqa: BLE001 - raised by the iterator at the tensor
                ready.put((chunk, None, exc))
                return
            hslot.event = event
            free_host.put(hslot)
            ready.put((chunk, dslot, event))


def _runs(chunk: Chunk, plan: Plan, limit: int) -> list[list[Piece]]:
    """The chunk's pieces in order, runs of small whole tensors (under ``limit`` bytes, back to back in
    the chunk and on disk) together, every other piece alone."""
    runs: list[list[Piece]] = []
    cur: list[Piece] = []
    for p in chunk.pieces:
        w = plan.wanted[p.key]
        small = 0 < p.nbytes < limit and p.tensor_offset == 0 and p.nbytes == w.nbytes and not w.partial
        if small and cur:
            last = cur[-1]
            if (last.chunk_offset + last.nbytes == p.chunk_offset
                    and plan.wanted[last.key].begin + last.nbytes == w.begin):
                cur.append(p)
                continue
        if cur:
            runs.append(cur)
            cur = []
        if small:
            cur = [p]
        else:
            runs.append([p])
    if cur:
        runs.append(cur)
    return runs


#: Fills what an in-place row-selected tensor does not read: finite and nonzero in every float format
#: (bf16 -2.9e-16, fp16 -0.022, fp8 e4m3 -0.2), a repeated byte no real weight holds throughout, so a
#: reader outside the rows shows up in any byte compare instead of passing on stale memory.
POISON = 0xA5


def _new_output(tr: Any, w: Any) -> Any:
    """The output buffer of one tensor; poisoned first where only some of its rows will be written.
    The fill runs on the D2D stream (or the simulated device's), so it is ordered before the copies."""
    buf = tr.empty(w.hand_out_nbytes)
    if not w.partial:
        return buf
    sim = getattr(tr, "sim", None)
    stream = getattr(tr, "d2d_stream", None)
    if sim is not None:
        sim.launch(lambda: buf.fill_(POISON), stream=stream, kind="memory", label="poison", inline_if_idle=True)
    elif stream is not None and getattr(tr, "name", "") == "cuda":
        with tr.torch.cuda.stream(stream):
            buf.fill_(POISON)
    else:
        buf.fill_(POISON)
    return buf


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set():
                raise _Stopped from None


def _read_into(fd: int, chunk: Chunk, buf: Any, plan: Plan) -> None:
    base = buf.data_ptr()
    for file_off, nbytes, chunk_off in chunk.reads:
        view = memoryview((ctypes.c_char * nbytes).from_address(base + chunk_off)).cast("B")
        got = 0
        while got < nbytes:
            n = os.preadv(fd, [view[got:]], file_off + got)
            if n <= 0:
                tensor = _tensor_at(chunk, chunk_off + got, plan)
                raise CheckpointError(chunk.path, f"truncated file: read {got} of {nbytes} bytes at offset "
                                                  f"{file_off}", tensor)
            got += n


def _tensor_at(chunk: Chunk, chunk_off: int, plan: Plan) -> str | None:
    for p in chunk.pieces:
        if p.chunk_offset <= chunk_off < p.chunk_offset + p.nbytes:
            return plan.wanted[p.key].name
    return plan.first_name(chunk)
