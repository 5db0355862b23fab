"""Which dim-0 rows of each checkpoint tensor a tensor-parallel rank keeps, found by tracing its loader.

Why: a rank keeps a slice of most tensors, and where that slice is a range of dim-0 rows it is a
contiguous byte range of the file, so only it needs to be read and to cross (under CC every byte
crosses through the encrypted bounce buffer). Which rows a rank keeps is decided by the engine's own
weight loaders (shard offsets, padding, merged and QKV layouts, replicated KV heads); restating that per
model would be a second copy that can silently disagree. So the rows are *observed*: the engine's real
loading code is run once on :class:`tracer` tensors (meta tensors, no data) that record what is done
to them.

A tensor gets rows ``(a, a + n)`` only when the one thing done to it is a single dim-0 ``narrow`` (or
the equivalent ``[a:b]`` slice), whose result is copied once, shape for shape, into a tensor that is
not a tracer. Everything else leaves it whole: no use at all, use of the whole tensor, a narrow along
another dim, several narrows, a transpose, a dtype or device change, a second copy. Metadata reads
(shape, dtype, size, dim, ...) are free.

While tracing nothing is written: a tracer copied into a parameter is a no-op, and a
:class:`_Guard` mode turns every other in-place write (``*_`` methods, ``__setitem__``, ``out=``,
``.data =``) into a no-op too, so the run leaves no tensor changed. Reading a tracer's values
(``item``, ``tolist``, a comparison used as a bool) raises: the caller then reads every tensor whole.
Limits: Python-level side effects of the loader (attributes it sets) and ops outside torch's function
dispatch are not intercepted; callers trace only loaders that a second, real run overwrites.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RowTrace", "Untraceable"]


class Untraceable(Exception):
    """The traced code cannot be traced faithfully: every tensor is read whole."""


@dataclass
class _Root:
    key: Hashable
    shape: tuple[int, ...]
    narrows: list[tuple[int, int]] = field(default_factory=list)
    copies: list[tuple[int, int] | None] = field(default_factory=list)
    tainted: str | None = None
    uses: int = 0

    def taint(self, why: str) -> None:
        if self.tainted is None:
            self.tainted = why


# Reading these from a tracer says nothing about which bytes are needed.
_META_PROPS = {"shape", "dtype", "device", "ndim", "is_cuda", "is_meta", "layout", "requires_grad", "is_sparse",
               "is_quantized", "names"}
_META_METHODS = {"size", "dim", "numel", "nelement", "ndimension", "element_size", "is_contiguous",
                 "is_floating_point", "is_complex", "__len__", "stride", "get_device", "__hash__"}
# Methods that return the same bytes: the view keeps its rows.
_ALIASES = {"detach", "contiguous"}
# In-place method names that do not touch data.
_HARMLESS_INPLACE = {"requires_grad_", "share_memory_", "retain_grad_"}


def _name(func: Any) -> tuple[str, str]:
    """(name, owner property) of a torch function: ``("__get__", "shape")`` for ``Tensor.shape``."""
    name = getattr(func, "__name__", "")
    owner = getattr(getattr(func, "__self__", None), "__name__", "")
    return name, owner


def _writes(func: Any, kwargs: dict[str, Any]) -> bool:
    name, owner = _name(func)
    if kwargs.get("out") is not None or name in ("__setitem__", "set_") or (name == "__set__" and owner == "data"):
        return True
    return name.endswith("_") and not name.startswith("_") and name not in _HARMLESS_INPLACE


def _written(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    out = kwargs.get("out")
    if out is not None:
        return out
    return args[0] if args else None


def _rows_of(index: Any, n: int) -> tuple[int, int] | None:
    """``t[index]`` as dim-0 rows ``(a, b)``: a step-1 slice, alone or followed by full slices / ``...``."""
    rest: tuple[Any, ...] = ()
    if isinstance(index, tuple) and index:
        index, rest = index[0], index[1:]
    if not isinstance(index, slice) or index.step not in (None, 1):
        return None
    if any(r is not Ellipsis and r != slice(None) for r in rest):
        return None
    if not all(v is None or type(v) is int for v in (index.start, index.stop)):
        return None
    r = range(n)[index]
    return r.start, max(r.start, r.stop)


class RowTrace:
    """One trace: make :meth:`tracer` tensors, run the loading code with :meth:`run`, read :meth:`rows`."""

    def __init__(self) -> None:
        self.roots: dict[Hashable, _Root] = {}
        self.skipped_writes = 0

    def tracer(self, key: Hashable, shape: tuple[int, ...], dtype: Any) -> Any:
        """A data-less stand-in for the checkpoint tensor ``key``. A key traced twice is read whole."""
        import torch

        root = self.roots.get(key)
        if root is not None:
            root.taint("yielded twice")
        else:
            root = self.roots[key] = _Root(key, tuple(shape))
        return _make(torch.empty(shape, dtype=dtype, device="meta"), root, None)

    def run(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` with writes suppressed; any exception it raises becomes :class:`Untraceable`."""
        try:
            with _Guard(self):
                fn()
        except Untraceable:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure means: not traceable, read whole
            raise Untraceable(f"{type(exc).__name__}: {exc}") from exc

    def rows(self) -> dict[Hashable, tuple[int, int]]:
        """The keys kept as one dim-0 row range, narrower than the whole tensor."""
        out = {}
        for key, r in self.roots.items():
            if r.tainted is not None or len(r.narrows) != 1 or r.copies != r.narrows:
                continue
            a, b = r.narrows[0]
            if r.shape and (a, b) != (0, r.shape[0]):
                out[key] = (a, b)
        return out

    def why_whole(self, key: Hashable) -> str:
        r = self.roots[key]
        if r.tainted is not None:
            return r.tainted
        if not r.copies:
            return "not copied"
        return "whole tensor used" if self.rows().get(key) is None else "rows"


def _make(meta: Any, root: _Root, rows: tuple[int, int] | None) -> Any:
    cls = _TRACER.get()
    t = cls._make_subclass(cls, meta)
    t._cc_root = root
    t._cc_rows = rows
    return t


def _tracer_class() -> type:
    import torch
    from torch.utils import _pytree as pytree

    class Tracer(torch.Tensor):
        """A meta tensor standing for one checkpoint tensor (or a dim-0 narrow of it)."""

        _cc_root: _Root
        _cc_rows: tuple[int, int] | None

        @classmethod
        def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            leaves = pytree.tree_leaves((args, kwargs))
            tracers = [x for x in leaves if isinstance(x, Tracer)]
            name, owner = _name(func)
            with torch._C.DisableTorchFunctionSubclass():
                if name == "__get__" and owner in _META_PROPS or name in _META_METHODS:
                    return func(*args, **kwargs)
                this = args[0] if args else None
                if isinstance(this, Tracer) and len(tracers) == 1:
                    root = this._cc_root
                    if name in _ALIASES or (name == "__get__" and owner == "data"):
                        return _make(func(*args, **kwargs), root, this._cc_rows)
                    rows = _narrow_rows(name, this, args[1:], kwargs)
                    if rows is not None:
                        if this._cc_rows is not None or root.narrows:
                            root.taint("narrowed twice")
                        root.narrows.append(rows)
                        return _make(func(*args, **kwargs), root, rows)
                if name == "copy_" and len(args) >= 2 and isinstance(this, torch.Tensor) \
                        and not isinstance(this, Tracer) and isinstance(args[1], Tracer) and len(tracers) == 1:
                    src = args[1]
                    if tuple(this.shape) != tuple(src.shape):
                        src._cc_root.taint("copied with broadcasting")
                    src._cc_root.copies.append(src._cc_rows)
                    return this  # never written while tracing
                for t in tracers:
                    t._cc_root.taint(f"{name or func} on the tensor")
                if _writes(func, kwargs) and not isinstance(_written(args, kwargs), Tracer):
                    return _written(args, kwargs)  # a write into a real tensor: suppressed
                meta = pytree.tree_map(_to_meta, (args, kwargs))
                out = func(*meta[0], **meta[1])
            first = tracers[0]._cc_root
            return pytree.tree_map(lambda x: _make(x, first, None) if isinstance(x, torch.Tensor)
                                   and not isinstance(x, Tracer) else x, out)

    def _to_meta(x: Any) -> Any:
        if isinstance(x, Tracer):
            with torch._C.DisableTorchFunctionSubclass():
                return x.as_subclass(torch.Tensor)
        if isinstance(x, torch.Tensor):
            return torch.empty_like(x, device="meta")
        return x

    return Tracer


def _narrow_rows(name: str, this: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, int] | None:
    """The dim-0 rows ``this.narrow(...)`` / ``this[...]`` selects, or None for any other call."""
    if not this.dim():
        return None
    n = int(this.shape[0])
    if name == "narrow":
        params = list(rest) + [kwargs[k] for k in ("dim", "start", "length") if k in kwargs]
        if len(params) != 3 or not all(type(v) is int for v in params):
            return None
        dim, start, length = params
        if dim not in (0, -this.dim()) or not (0 <= start and 0 <= length and start + length <= n):
            return None
        return start, start + length
    if name == "__getitem__" and len(rest) == 1 and not kwargs:
        return _rows_of(rest[0], n)
    return None


def _guard_class() -> type:
    from torch.overrides import TorchFunctionMode

    class Guard(TorchFunctionMode):
        """Suppresses in-place writes into real tensors while a trace runs (tracers handle their own)."""

        def __init__(self, trace: RowTrace) -> None:
            super().__init__()
            self.trace = trace

        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if not any(issubclass(t, _TRACER.get()) for t in types) and _writes(func, kwargs):
                self.trace.skipped_writes += 1
                return _written(args, kwargs)
            return func(*args, **kwargs)

    return Guard


class _Lazy:
    """Builds the torch classes on first use: nothing here imports torch at import time."""

    def __init__(self, build: Callable[[], type]) -> None:
        self.build = build
        self.cls: type | None = None

    def get(self) -> Any:
        if self.cls is None:
            self.cls = self.build()
        return self.cls


_TRACER = _Lazy(_tracer_class)
_GUARD = _Lazy(_guard_class)


def _Guard(trace: RowTrace) -> Any:  # noqa: N802 - reads as the class it builds
    return _GUARD.get()(trace)
