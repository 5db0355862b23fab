"""Collect the host->device copies code makes inside a scope and cross once, before their first use.

Batch builders (SGLang's ``prepare_for_extend``, ``ForwardBatch.init_new``, ...) create several small
device tensors from host lists, each its own crossing. Inside :func:`deferred_h2d` a thread-local
``TorchFunctionMode`` answers each such creation (``host.to(dev)``, ``torch.tensor(data, device=dev)``)
with a *placeholder*: a view of a device arena allocated now, whose bytes are written at the next
flush. The host bytes are packed into a reserved staging slot's host buffer at the moment of the call,
so changing the host tensor afterwards never reaches the device, and the flush has nothing left to pack.

A flush (one packed crossing on the stager's side stream, the current stream waits for it, one
device->device copy per arena) happens before anything can read a placeholder: see :mod:`.readers`
for every reader and what catches it. Scope exit flushes what is left. So a builder that makes all its
inputs before using them crosses once; one that interleaves crosses once per interleaving, and
correctness never depends on which.

Only fresh tensors are deferred: copies into existing device tensors (``dst.copy_(host)``) may alias
a larger buffer the code reads through another name, so they run as written. Host tensors larger than
``max_bytes``, anything during graph capture, and copies made while every staging slot stays reserved
also run as written.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..packing import ALIGN, Layout, Segment, _align
from . import readers
from .stager import H2DStager

log = logging.getLogger("cc_runtime.staging")

DEFAULT_MAX_BYTES = 1 << 20
ARENA_BYTES = 64 << 10


class _Arena:
    __slots__ = ("buf", "used", "stream", "base")

    def __init__(self, buf: Any, stream: Any, base: int) -> None:
        self.buf, self.used, self.stream, self.base = buf, 0, stream, base  # base: offset in the slot


class Collector:
    """Pending host->device creations of one scope, flushed through ``stager`` in one crossing."""

    def __init__(self, stager: H2DStager, is_target: Callable[[Any], bool],
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.stager = stager
        self.is_target = is_target  # does a .to(device) target the stager's device?
        self.max_bytes = max_bytes
        # (placeholder, arena, offset in the arena, its segment in the slot); the segment is kept so the
        # flush never asks a pending placeholder for metadata (each such call runs its Python handler).
        self.pending: list[tuple[Any, _Arena, int, Segment]] = []
        self.views: list[Any] = []  # views of pending placeholders (pending too)
        self.arenas: list[_Arena] = []
        self.slot: Any = None  # the reserved staging slot the pending bytes are packed into
        self.cursor = 0  # bytes of slot.host in use
        self.spares: list[tuple[Any, Any]] = []  # pre-staged (host snapshot, placeholder), each handed out once
        self.foreign: list[Any] = []  # events of fills another thread queued on its own stream
        self.owner = threading.get_ident()
        self.lock = threading.RLock()
        self.flushes = 0
        self.deferred = 0
        self.declined = 0  # copies run as written because no staging slot was free

    def prestage(self, host: Any) -> bool:
        """Cross a copy of ``host`` with the next flush, ahead of the copy the scope is known to make later.

        That later copy (``defer`` of a host tensor equal to this snapshot in dtype, shape and bytes) gets
        this placeholder, so inputs made after a mid-scope read still ride that read's crossing. The bytes
        are compared when the copy is made, against the snapshot that crossed: a guess that turned out
        wrong is merely unused, never stale.
        """
        with self.lock, readers.quiet():
            if not self._eligible(host):
                return False
            snapshot = host.clone()
            placeholder = self._placeholder(snapshot)
            if placeholder is None:
                return False
            self.spares.append((snapshot, placeholder))
            return True

    def defer(self, host: Any) -> Any:
        """A device placeholder for a copy of ``host`` (its bytes packed now, crossed at the next flush), or None."""
        import torch

        with self.lock, readers.quiet():
            if not self._eligible(host):
                return None
            for i, (snapshot, placeholder) in enumerate(self.spares):
                if snapshot.dtype == host.dtype and snapshot.shape == host.shape and torch.equal(snapshot, host):
                    del self.spares[i]  # handed out once: the caller owns it as it would a fresh copy
                    return placeholder
            placeholder = self._placeholder(host)
            if placeholder is not None:
                self.deferred += 1
            return placeholder

    def _eligible(self, host: Any) -> bool:
        import torch

        if not isinstance(host, torch.Tensor) or host.device.type != "cpu" or host.layout != torch.strided \
                or host.is_quantized or host.requires_grad or type(host) is not torch.Tensor:
            return False
        sim = getattr(self.stager.backend, "sim", None)
        if sim is not None and sim.is_device(host):  # simulated device: resident already, as a cuda tensor is
            return False
        nbytes = host.numel() * host.element_size()
        return not (nbytes > self.max_bytes or host.element_size() > ALIGN or self.stager.backend.is_capturing())

    def _placeholder(self, host: Any) -> Any:
        import torch

        stager = self.stager
        nbytes = host.numel() * host.element_size()
        arena = self.arenas[-1] if self.arenas else None
        offset = _align(arena.used, ALIGN) if arena is not None else 0
        new_arena = arena is None or offset + nbytes > arena.buf.numel()
        if new_arena:
            offset = 0
            base = _align(self.cursor, ALIGN)
            size = max(ARENA_BYTES, _align(nbytes, ALIGN))
        else:
            assert arena is not None
            base = arena.base
        end = base + offset + nbytes
        if self.slot is None:
            self.slot = stager.reserve(max(end, ARENA_BYTES))
            if self.slot is None:  # every slot still reserved: this copy runs as written
                self.declined += 1
                return None
        stager.grow_host(self.slot, end, keep=self.cursor)
        if new_arena:
            backend = stager.backend
            arena = _Arena(backend.device_bytes(size), backend.current_stream(), base)
            if stager.verify:
                arena.buf.fill_(readers.POISON_BYTE)  # fresh memory nobody reads yet: in place, now
            self.arenas.append(arena)
        assert arena is not None
        # Copy at call: the host bytes as they are now, whatever the caller does with ``host`` next.
        flat = host.contiguous().view(-1)
        dst = self.slot.host[base + offset: end]
        if nbytes:
            dst.copy_(flat.view(torch.uint8) if flat.dtype != torch.uint8 else flat)
        arena.used = offset + nbytes
        self.cursor = max(self.cursor, end)
        raw = arena.buf[offset: offset + nbytes]
        placeholder = stager._dev((raw.view(host.dtype) if host.dtype != torch.uint8 else raw).view(host.shape))
        self._make_pending(placeholder)
        self.pending.append((placeholder, arena, offset,
                             Segment(base + offset, nbytes, host.dtype, tuple(host.shape))))
        return placeholder

    def _make_pending(self, t: Any) -> None:
        pending_cls = readers.rules()[0]
        t.__class__ = pending_cls
        t.__dict__["_cc_collector"] = self

    def track_view(self, base: Any, view: Any) -> None:
        """A view of a pending placeholder is pending too: its first read must flush."""
        with self.lock:
            if type(base) is not readers.rules()[0]:
                return  # flushed meanwhile (another thread): the view is an ordinary, filled tensor
            self.stager._dev(view)
            self._make_pending(view)
            self.views.append(view)

    def touches(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> bool:
        return bool(self.pending) and readers.touches(args, kwargs, readers.rules()[0])

    def flush(self) -> int:
        """Cross once for everything pending; returns how many tensors were carried."""
        with self.lock, readers.quiet():
            if not self.pending:
                return 0
            pending, arenas, views, slot, cursor = self.pending, self.arenas, self.views, self.slot, self.cursor
            self.pending, self.arenas, self.views, self.slot, self.cursor = [], [], [], None, 0
            backend = self.stager.backend
            stream = backend.current_stream()
            # Layout of the slot as packed: each arena at its base, so one D2D per arena fills it.
            segs = tuple(seg for _p, _a, _o, seg in pending)
            staged = self.stager.cross(slot, Layout(segs, _align(cursor, ALIGN)))
            _ordered_after_arena_streams(arenas, backend, stream)
            staged.copy_regions([(a.buf, a.base, a.used) for a in arenas])
            if threading.get_ident() != self.owner:
                # Filled on this thread's stream: the owner's stream must wait for it before its next op.
                ev = backend.new_event()
                ev.record()
                self.foreign.append(ev)
            plain = readers.rules()[0].__mro__[1]
            for p, _a, _o, _s in pending:
                p.__class__ = plain
                p.__dict__.pop("_cc_collector", None)
            for v in views:
                v.__class__ = plain
                v.__dict__.pop("_cc_collector", None)
            self.flushes += 1
            return len(pending)

    def wait_foreign(self) -> None:
        """Order the current stream after fills other threads queued on theirs."""
        with self.lock:
            events, self.foreign = self.foreign, []
        for ev in events:
            self.stager.backend.wait_event(ev)

    def release_unused(self) -> None:
        """Scope end: a slot reserved for copies that all turned out ineligible goes back to the ring."""
        with self.lock:
            if self.slot is not None and not self.pending:
                self.stager._release(self.slot, read=False)
                self.slot = None


def _ordered_after_arena_streams(arenas: list[_Arena], backend: Any, stream: Any) -> None:
    for arena in arenas:
        if arena.stream is stream:
            continue
        # Allocated (and, in verify mode, poisoned) on another stream: fill after that stream's work,
        # and tell the caching allocator the memory is used here too.
        with backend.stream(arena.stream):
            ev = backend.new_event()
            ev.record()
        backend.wait_event(ev)
        if getattr(arena.buf, "is_cuda", False):
            arena.buf.record_stream(stream)


_tls = threading.local()
readers.install()  # as early as possible: references to the wrapped functions taken later are wrapped


def current() -> Collector | None:
    return getattr(_tls, "collector", None)


@contextlib.contextmanager
def deferred_h2d(stager: H2DStager, is_target: Callable[[Any], bool],
                 max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[Collector]:
    """Within the block, fresh host->device tensors cross together (see the module docstring).

    Nested scopes join the outermost one. The block's pending copies are flushed on exit, on the stream
    current then, also when the block raises (the placeholders may have escaped).
    """
    outer = current()
    if outer is not None:
        yield outer
        return
    readers.install()
    collector = Collector(stager, is_target, max_bytes)
    _tls.collector = collector
    readers.register(collector)
    try:
        with _mode_class()(collector):
            yield collector
    except BaseException:
        _tls.collector = None
        try:
            collector.flush()
            collector.wait_foreign()
        except Exception as exc:  # noqa: BLE001 - the block's own error is the one to report
            log.error("cc_runtime: staged inputs of a failed block could not be copied: %s", exc)
        raise
    finally:
        _tls.collector = None
        readers.unregister(collector)
        collector.release_unused()
    collector.flush()
    collector.wait_foreign()
    collector.release_unused()


def _target_of(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, bool]:
    """(device, non_blocking) of a plain ``t.to(device[, non_blocking])``; (None, False) otherwise."""
    rest = list(args[1:])
    kw = dict(kwargs)
    nb = bool(kw.pop("non_blocking", False))
    if len(rest) == 2 and isinstance(rest[1], bool):
        nb = rest.pop()
    if len(rest) == 1 and not kw:
        return rest[0], nb
    if not rest and set(kw) == {"device"}:
        return kw["device"], nb
    return None, False


@functools.cache
def _mode_class() -> Any:
    # Built once: defining a TorchFunctionMode subclass costs ~50 us and builders run every step.
    import torch
    from torch.overrides import TorchFunctionMode

    to_funcs = (torch.Tensor.to, torch._C.TensorBase.to)
    tensor_funcs = (torch.tensor,)
    pending_cls, meta, view_funcs = readers.rules()

    class DeferHostToDevice(TorchFunctionMode):
        def __init__(self, collector: Collector) -> None:
            super().__init__()
            self.collector = collector

        def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                               kwargs: dict[str, Any] | None = None) -> Any:
            kwargs = kwargs or {}
            c = self.collector
            if c.foreign:
                c.wait_foreign()
            if func in to_funcs and args and type(args[0]) is torch.Tensor and args[0].device.type == "cpu":
                dev, _nb = _target_of(func, args, kwargs)
                if dev is not None and c.is_target(dev):
                    placeholder = c.defer(args[0])
                    if placeholder is not None:
                        return placeholder
            elif func in tensor_funcs and kwargs.get("device") is not None and c.is_target(kwargs["device"]):
                if c.touches(args, kwargs):  # the data itself is (or holds) a pending placeholder
                    c.flush()
                host_kwargs = {k: v for k, v in kwargs.items() if k != "device"}
                host = func(*args, **host_kwargs)
                placeholder = c.defer(host)
                if placeholder is not None:
                    return placeholder
                return host.to(kwargs["device"])
            if c.pending and func not in meta and not (func in view_funcs and args and type(args[0]) is pending_cls) \
                    and c.touches(args, kwargs):
                c.flush()
            return func(*args, **kwargs)

    return DeferHostToDevice
