"""Collect the host->device copies code makes inside a scope and cross once, before their first use.

Batch builders (SGLang's ``prepare_for_extend``, ``ForwardBatch.init_new``, ...) create several small
device tensors from host lists, each its own crossing. Inside :func:`deferred_h2d` a thread-local
``TorchFunctionMode`` answers each such creation (``host.to(dev)``, ``torch.tensor(data, device=dev)``)
with a *placeholder*: a view of a device arena allocated now, whose bytes are not yet written. The first
torch call that touches a placeholder (any op, ``data_ptr()`` as Triton's launcher calls it, a custom
op) flushes every pending creation through :class:`~cc_runtime.staging.H2DStager`: one packed crossing on
the side stream, the current stream waits for it, one device->device copy per arena. Scope exit flushes
what is left. So a builder that makes all its inputs before using them crosses once; one that
interleaves crosses once per interleaving, and correctness never depends on which.

Only fresh tensors are deferred: copies into existing device tensors (``dst.copy_(host)``) may alias
a larger buffer the code reads through another name, so they run as written. Host tensors larger than
``max_bytes`` and anything during graph capture also run as written.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..packing import ALIGN, Layout, Segment, _align
from .stager import H2DStager

log = logging.getLogger("cc_runtime.staging")

DEFAULT_MAX_BYTES = 1 << 20
ARENA_BYTES = 64 << 10


class _Arena:
    __slots__ = ("buf", "used", "stream")

    def __init__(self, buf: Any, stream: Any) -> None:
        self.buf, self.used, self.stream = buf, 0, stream


class Collector:
    """Pending host->device creations of one scope, flushed through ``stager`` in one crossing."""

    def __init__(self, stager: H2DStager, is_target: Callable[[Any], bool],
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.stager = stager
        self.is_target = is_target  # does a .to(device) target the stager's device?
        self.max_bytes = max_bytes
        self.pending: list[tuple[Any, Any, _Arena, int]] = []  # (host, placeholder, arena, offset)
        self.ids: set[int] = set()
        self.views: list[Any] = []  # views of placeholders (kept alive so their ids stay theirs)
        self.arenas: list[_Arena] = []
        self.spares: list[tuple[Any, Any]] = []  # pre-staged (host, placeholder), each handed out once
        self.flushes = 0
        self.deferred = 0

    def prestage(self, host: Any) -> bool:
        """Cross a copy of ``host`` with the next flush, ahead of the copy the scope is known to make later.

        That later copy (``defer`` of a host tensor equal to this snapshot in dtype, shape and bytes) gets
        this placeholder, so inputs made after a mid-scope read still ride that read's crossing. The bytes
        are compared when the copy is made, against the snapshot that crossed: a guess that turned out
        wrong is merely unused, never stale.
        """
        if not self._eligible(host):
            return False
        snapshot = host.clone()
        self.spares.append((snapshot, self._placeholder(snapshot)))
        return True

    def defer(self, host: Any) -> Any:
        """A device placeholder for a copy of ``host`` (filled at the next flush), or None."""
        import torch

        if not self._eligible(host):
            return None
        for i, (snapshot, placeholder) in enumerate(self.spares):
            if snapshot.dtype == host.dtype and snapshot.shape == host.shape and torch.equal(snapshot, host):
                del self.spares[i]  # handed out once: the caller owns it as it would a fresh copy
                return placeholder
        self.deferred += 1
        return self._placeholder(host)

    def _eligible(self, host: Any) -> bool:
        import torch

        if not isinstance(host, torch.Tensor) or host.device.type != "cpu" or host.layout != torch.strided \
                or host.is_quantized or host.requires_grad:
            return False
        sim = getattr(self.stager.backend, "sim", None)
        if sim is not None and sim.is_device(host):  # simulated device: resident already, as a cuda tensor is
            return False
        nbytes = host.numel() * host.element_size()
        return not (nbytes > self.max_bytes or host.element_size() > ALIGN or self.stager.backend.is_capturing())

    def _placeholder(self, host: Any) -> Any:
        import torch

        nbytes = host.numel() * host.element_size()
        arena = self.arenas[-1] if self.arenas else None
        offset = _align(arena.used, ALIGN) if arena is not None else 0
        if arena is None or offset + nbytes > arena.buf.numel():
            backend = self.stager.backend
            arena = _Arena(backend.device_bytes(max(ARENA_BYTES, _align(nbytes, ALIGN))), backend.current_stream())
            self.arenas.append(arena)
            offset = 0
        arena.used = offset + nbytes
        raw = arena.buf[offset: offset + nbytes]
        placeholder = self.stager._dev((raw.view(host.dtype) if host.dtype != torch.uint8 else raw).view(host.shape))
        self.pending.append((host.contiguous(), placeholder, arena, offset))
        self.ids.add(id(placeholder))
        return placeholder

    def track_view(self, view: Any) -> None:
        """A view of a pending placeholder is pending too: its first read must flush."""
        self.views.append(self.stager._dev(view))
        self.ids.add(id(view))

    def touches(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> bool:
        ids = self.ids
        for a in (*args, *(kwargs.values() if kwargs else ())):
            if id(a) in ids:
                return True
            if isinstance(a, (list, tuple)):
                for b in a:
                    if id(b) in ids:
                        return True
        return False

    def flush(self) -> int:
        """Cross once for everything pending; returns how many tensors were carried."""
        if not self.pending:
            return 0
        pending, arenas = self.pending, self.arenas
        self.pending, self.ids, self.arenas, self.views = [], set(), [], []
        # One slot region per arena, laid out exactly as the arena, so one D2D per arena fills it.
        bases: dict[int, int] = {}
        cursor = 0
        for arena in arenas:
            bases[id(arena)] = cursor
            cursor = _align(cursor + arena.used, ALIGN)
        segs = tuple(Segment(bases[id(a)] + off, h.numel() * h.element_size(), h.dtype, tuple(h.shape))
                     for h, _p, a, off in pending)
        staged = self.stager.stage_layout([h for h, _p, _a, _o in pending], Layout(segs, cursor))
        _written_on_current_stream(arenas, self.stager.backend.current_stream())
        staged.copy_regions([(a.buf, bases[id(a)], a.used) for a in arenas])
        self.flushes += 1
        return len(pending)


def _written_on_current_stream(arenas: list[_Arena], stream: Any) -> None:
    # An arena allocated on one CUDA stream and filled on another: tell the caching allocator, so the
    # memory is not handed out again before the filling stream is done with it.
    for arena in arenas:
        if arena.stream is not stream and getattr(arena.buf, "is_cuda", False):
            arena.buf.record_stream(stream)


_tls = threading.local()


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
    collector = Collector(stager, is_target, max_bytes)
    _tls.collector = collector
    try:
        with _mode_class()(collector):
            yield collector
    except BaseException:
        _tls.collector = None
        try:
            collector.flush()
        except Exception as exc:  # noqa: BLE001 - the block's own error is the one to report
            log.error("cc_runtime: staged inputs of a failed block could not be copied: %s", exc)
        raise
    finally:
        _tls.collector = None
    collector.flush()


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
    # Reading metadata never reads device bytes: no flush for these.
    meta = {getattr(torch.Tensor, p).__get__ for p in ("shape", "dtype", "device", "is_cuda", "ndim", "layout",
                                                         "requires_grad", "is_cpu")}
    meta |= {torch.Tensor.size, torch.Tensor.dim, torch.Tensor.numel, torch.Tensor.__len__,
             torch.Tensor.element_size, torch.Tensor.stride, torch.Tensor.is_contiguous, torch.Tensor.get_device}

    # Always views (never copies): the result aliases a placeholder without reading it.
    view_funcs = {torch.Tensor.view, torch.Tensor.unsqueeze, torch.Tensor.squeeze, torch.Tensor.expand}

    class DeferHostToDevice(TorchFunctionMode):
        def __init__(self, collector: Collector) -> None:
            super().__init__()
            self.collector = collector

        def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                               kwargs: dict[str, Any] | None = None) -> Any:
            kwargs = kwargs or {}
            c = self.collector
            if func in to_funcs and args and isinstance(args[0], torch.Tensor) and args[0].device.type == "cpu":
                dev, _nb = _target_of(func, args, kwargs)
                if dev is not None and c.is_target(dev):
                    placeholder = c.defer(args[0])
                    if placeholder is not None:
                        return placeholder
            elif func in tensor_funcs and kwargs.get("device") is not None and c.is_target(kwargs["device"]):
                host_kwargs = {k: v for k, v in kwargs.items() if k != "device"}
                host = func(*args, **host_kwargs)
                placeholder = c.defer(host)
                if placeholder is not None:
                    return placeholder
                return host.to(kwargs["device"])
            if c.pending and func in view_funcs and args and id(args[0]) in c.ids:
                out = func(*args, **kwargs)  # a view reads no bytes; it is tracked like its base
                if isinstance(out, torch.Tensor):
                    c.track_view(out)
                return out
            if c.pending and func not in meta and c.touches(args, kwargs):
                c.flush()
            return func(*args, **kwargs)

    return DeferHostToDevice
