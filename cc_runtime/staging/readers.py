"""Every way to reach a placeholder's device memory flushes the pending copies first.

A deferred scope (:mod:`.deferred`) hands out *placeholders*: device tensors whose bytes are written
at the scope's next flush. A reader must never see them before that. The ways in, and what catches each:

* **torch ops, in the scope's thread**: the scope's ``TorchFunctionMode`` flushes before any op that is
  not metadata-only and reaches a placeholder anywhere in its arguments: lists, tuples, dicts, dataclass
  and other object fields, at any depth (:func:`touches`; a walk that runs out of its node budget
  counts as a touch, so a huge argument costs an early flush, never a missed one).
* **torch ops, ``data_ptr()`` (Triton's launcher calls it), ``__dlpack__`` and
  ``__cuda_array_interface__``, in any thread**: a pending placeholder's class is a ``torch.Tensor``
  subclass whose ``__torch_function__`` flushes its scope (tensor-subclass dispatch is not thread-local,
  unlike modes). The flush sets the class back to ``torch.Tensor``, so filled tensors cost nothing later.
* **readers torch cannot see** (process-wide wrappers installed by :func:`install`, inert while no scope
  is open): ``torch.utils.dlpack.to_dlpack`` and ``torch.to_dlpack``; every tvm-ffi function fetched from a ``tvm_ffi.Module``
  (attribute, ``get_function``, ``[]``) or by ``tvm_ffi.get_global_func``, and ``tvm_ffi.from_dlpack``;
  stream and event synchronisation (``torch.cuda.synchronize``, ``torch.cuda.Stream``'s and
  ``torch.cuda.Event``'s ``synchronize`` / ``query`` / ``wait_*`` / ``record``, and the simulated
  device's); and the start of CUDA graph capture (``CUDAGraph.capture_begin``, ``SimDevice.capture``).

* **tvm-ffi functions fetched before** :func:`install` **ran**: tvm-ffi asks an argument's class for
  ``__tvm_ffi_object__`` before its C DLPack path; the placeholder class answers it by flushing (and
  waiting for the fill on the host) and handing over the filled tensor.

Not interceptable, so a deferred site must not let a placeholder reach them before its scope ends (the
SGLang patch lists its sites' readers): C code handed a raw pointer obtained before the placeholder
existed; ``torch._C._to_dlpack`` bound under another name before :func:`install` ran (it runs when
:mod:`.deferred` is imported and at every scope's start); synchronisation through the generic
``torch.Event`` / ``torch.Stream`` C types.

Verification mode (``CC_RUNTIME_STAGING_VERIFY=1``) fills every placeholder, staging slot and staged
output buffer with :data:`POISON_BYTE` when it is made, so a read that comes too early shows as wrong
values rather than the previous step's plausible ones.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("cc_runtime.staging")

POISON_BYTE = 0xA5  # int32 -1515870811, float32 -2.9e-16: no plausible input value
WALK_BUDGET = 512  # containers and objects walked per call before it counts as a touch

_tls = threading.local()
_active: weakref.WeakSet[Any] = weakref.WeakSet()  # collectors of open scopes, every thread
_active_lock = threading.Lock()
_verify_warned = False


def verify_enabled() -> bool:
    """``CC_RUNTIME_STAGING_VERIFY``; an invalid value is reported once and counts as off."""
    global _verify_warned
    from .. import settings

    try:
        return bool(settings.get("CC_RUNTIME_STAGING_VERIFY"))
    except settings.SettingsError as exc:
        if not _verify_warned:
            _verify_warned = True
            log.error("cc_runtime: %s; staging verification off", exc)
        return False


# -- who is pending ---------------------------------------------------------------------------------
def register(collector: Any) -> None:
    with _active_lock:
        _active.add(collector)


def unregister(collector: Any) -> None:
    with _active_lock:
        _active.discard(collector)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """cc_runtime's own staging work: the wrappers below do not flush from inside it."""
    _tls.quiet = getattr(_tls, "quiet", 0) + 1
    try:
        yield
    finally:
        _tls.quiet -= 1


def flush_all(thread: int | None = None) -> None:
    """Flush every open scope's pending copies (a reader the scopes cannot attribute is about to run);
    with ``thread``, only the scopes that thread opened."""
    if not _active or int(getattr(_tls, "quiet", 0)):
        return
    with _active_lock:
        collectors = [c for c in _active if thread is None or c.owner == thread]
    for c in collectors:
        if c.pending:
            c.flush()


# -- what an op reaches -----------------------------------------------------------------------------
@functools.cache
def rules() -> tuple[Any, frozenset[Any], frozenset[Any]]:
    """``(Pending, metadata functions, view functions)``, built once (defining classes costs ~50 us)."""
    import torch

    meta = {getattr(torch.Tensor, p).__get__ for p in ("shape", "dtype", "device", "is_cuda", "ndim", "layout",
                                                         "requires_grad", "is_cpu")}
    meta |= {torch.Tensor.size, torch.Tensor.dim, torch.Tensor.numel, torch.Tensor.__len__,
             torch.Tensor.element_size, torch.Tensor.stride, torch.Tensor.is_contiguous, torch.Tensor.get_device}
    views = frozenset({torch.Tensor.view, torch.Tensor.unsqueeze, torch.Tensor.squeeze, torch.Tensor.expand})
    meta_f = frozenset(meta)
    disabled = torch._C.DisableTorchFunctionSubclass

    class Pending(torch.Tensor):
        """A placeholder (or a view of one) whose bytes are not written yet. Any op flushes its scope."""

        @classmethod
        def __torch_function__(cls, func: Any, types: Any, args: tuple[Any, ...] = (),
                               kwargs: dict[str, Any] | None = None) -> Any:
            kwargs = kwargs or {}
            if func in meta_f:
                with disabled():
                    return func(*args, **kwargs)
            if func in views and args and type(args[0]) is cls:
                owner = args[0].__dict__.get("_cc_collector")
                with disabled():
                    out = func(*args, **kwargs)
                if owner is not None and isinstance(out, torch.Tensor):
                    owner.track_view(args[0], out)  # a view reads nothing: it stays pending with its base
                return out
            flush_owners(args, kwargs, cls)
            with disabled():
                return func(*args, **kwargs)

        def __tvm_ffi_object__(self) -> Any:  # noqa: N807 - tvm-ffi's protocol name
            # tvm-ffi checks this before its C DLPack path: a function fetched before install() ran
            # still flushes here. The fill is waited for on the host, since a call whose only tensors
            # are placeholders may launch on a stream other than the current one.
            owner = self.__dict__.get("_cc_collector")
            if owner is None:
                flush_all()
            else:
                owner.flush()
                backend = owner.stager.backend
                backend.synchronize_stream(backend.current_stream())
            return sys.modules["tvm_ffi"].from_dlpack(self)

    return Pending, meta_f, views


_ATOMS = (int, float, bool, str, bytes, complex, type(None))


def _walk(args: tuple[Any, ...], kwargs: dict[str, Any] | None, pending_cls: Any) -> Iterator[Any]:
    """Yield every pending tensor reachable from the arguments; yields None when the budget runs out."""
    import types as pytypes

    import torch

    stack: list[Any] = [*args, *(kwargs.values() if kwargs else ())]
    seen: set[int] = set()
    budget = WALK_BUDGET
    skip = (type, pytypes.ModuleType, pytypes.FunctionType, pytypes.BuiltinFunctionType, pytypes.MethodType,
            torch.dtype, torch.device)
    while stack:
        a = stack.pop()
        t = type(a)
        if t is pending_cls:
            yield a
            continue
        if t in _ATOMS or t is torch.Tensor or isinstance(a, skip):
            continue
        if isinstance(a, torch.Tensor):
            continue  # another subclass (a Parameter): not a placeholder
        if id(a) in seen:
            continue
        seen.add(id(a))
        budget -= 1
        if budget < 0:
            yield None
            return
        if isinstance(a, (list, tuple, set, frozenset)):
            stack.extend(a)
        elif isinstance(a, dict):
            stack.extend(a.keys())
            stack.extend(a.values())
        else:
            d = getattr(a, "__dict__", None)
            if isinstance(d, dict):
                stack.extend(d.values())
            for klass in t.__mro__:
                for name in klass.__dict__.get("__slots__", ()):
                    if isinstance(name, str) and name not in ("__dict__", "__weakref__"):
                        stack.append(getattr(a, name, None))


def touches(args: tuple[Any, ...], kwargs: dict[str, Any] | None, pending_cls: Any) -> bool:
    """True when a pending placeholder is reachable from the arguments (or the walk ran out of budget)."""
    for _ in _walk(args, kwargs, pending_cls):
        return True
    return False


def flush_owners(args: tuple[Any, ...], kwargs: dict[str, Any] | None, pending_cls: Any) -> None:
    """Flush the scopes whose placeholders the arguments reach (every open scope if the walk gave up)."""
    owners = []
    for t in _walk(args, kwargs, pending_cls):
        owner = None if t is None else t.__dict__.get("_cc_collector")
        if owner is None:
            flush_all()
            return
        if owner not in owners:
            owners.append(owner)
    for owner in owners:
        owner.flush()


# -- readers torch cannot see -----------------------------------------------------------------------
_installed: dict[tuple[Any, str], Any] = {}  # (owner, attribute) -> the original
_install_lock = threading.Lock()


def _flushing(fn: Any) -> Any:
    if getattr(fn, "__cc_flushing__", None) is not None:
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # A sync, record or capture makes the calling thread's own queued work visible; it is what a
        # reader on this thread does before reading device memory behind torch's back. Another thread's
        # scope is not flushed here: its placeholders reach this thread only as tensors, and any op,
        # data_ptr or DLPack export of one flushes its scope from whichever thread (the Pending class).
        # Flushing every scope on every sync split steps in two when the readback worker or a simulated
        # stream synchronised while the scheduler built a step (an extra crossing under CC).
        if _active:
            flush_all(threading.get_ident())
        return fn(*args, **kwargs)

    wrapper.__cc_flushing__ = fn  # type: ignore[attr-defined]
    return wrapper


def _ffi_function(func: Any) -> Any:
    """A tvm-ffi function that flushes open scopes before each call (it reads tensors in C)."""
    return _flushing(func) if callable(func) else func


def _replace(owner: Any, name: str, new: Any) -> None:
    original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if original is None or (owner, name) in _installed:
        return
    try:
        setattr(owner, name, new(original))
    except (AttributeError, TypeError) as exc:  # a C type: cannot be wrapped, listed in the docstring
        log.debug("cc_runtime: %s.%s not intercepted: %s", getattr(owner, "__name__", owner), name, exc)
        return
    _installed[(owner, name)] = original


def install() -> None:
    """Put the wrappers in place (idempotent; tvm-ffi once it is imported, which a later call catches)."""
    if ("torch", "done") in _installed and (("tvm_ffi", "done") in _installed or "tvm_ffi" not in sys.modules):
        return  # every scope calls this: no lock on the common path
    with _install_lock:
        if ("torch", "done") not in _installed:
            _install_torch()
            _installed[("torch", "done")] = True
        tvm_ffi = sys.modules.get("tvm_ffi")
        if tvm_ffi is not None and ("tvm_ffi", "done") not in _installed:
            _install_tvm_ffi(tvm_ffi)
            _installed[("tvm_ffi", "done")] = True


def _install_torch() -> None:
    import torch
    import torch.utils.dlpack

    _replace(torch.utils.dlpack, "to_dlpack", _flushing)
    _replace(torch, "to_dlpack", _flushing)
    cuda = torch.cuda
    _replace(cuda, "synchronize", _flushing)
    targets: tuple[tuple[Any, tuple[str, ...]], ...] = (
        (getattr(cuda, "Stream", None), ("synchronize", "query", "wait_event", "wait_stream")),
        (getattr(cuda, "Event", None), ("synchronize", "query", "wait", "record")),
        (getattr(cuda, "CUDAGraph", None), ("capture_begin",)))
    for cls, names in targets:
        for name in names if cls is not None else ():
            _replace(cls, name, _flushing)
    from ..emulator.simdevice import SimDevice
    from ..emulator.simstream import SimEvent, SimStream

    sim_targets: tuple[tuple[Any, tuple[str, ...]], ...] = (
        (SimDevice, ("synchronize", "capture")), (SimStream, ("synchronize", "query", "wait_event", "wait_stream")),
        (SimEvent, ("synchronize", "query", "wait", "record")))
    for cls, names in sim_targets:
        for name in names:
            _replace(cls, name, _flushing)


def _install_tvm_ffi(tvm_ffi: Any) -> None:
    module_cls = getattr(getattr(tvm_ffi, "module", None), "Module", None) or getattr(tvm_ffi, "Module", None)

    def getattr_wrapper(original: Any) -> Any:
        def __getattr__(self: Any, name: str) -> Any:  # noqa: N807 - the method it replaces
            func = _ffi_function(original(self, name))
            try:
                setattr(self, name, func)  # cached as upstream caches it, but wrapped
            except (AttributeError, TypeError):
                pass
            return func

        __getattr__.__cc_flushing__ = original  # type: ignore[attr-defined]
        return __getattr__

    def returns_function(original: Any) -> Any:
        @functools.wraps(original)
        def fetch(*args: Any, **kwargs: Any) -> Any:
            return _ffi_function(original(*args, **kwargs))

        fetch.__cc_flushing__ = original  # type: ignore[attr-defined]
        return fetch

    if module_cls is not None:
        _replace(module_cls, "__getattr__", getattr_wrapper)
        _replace(module_cls, "get_function", returns_function)
        _replace(module_cls, "__getitem__", returns_function)
    for owner in (tvm_ffi, getattr(tvm_ffi, "registry", None)):
        if owner is not None:
            _replace(owner, "get_global_func", returns_function)
    _replace(tvm_ffi, "from_dlpack", _flushing)


def uninstall() -> None:
    """Restore every wrapped object (tests; ``cc_runtime.deactivate``)."""
    with _install_lock:
        for (owner, name), original in list(_installed.items()):
            if name == "done":
                continue
            with contextlib.suppress(AttributeError, TypeError):
                setattr(owner, name, original)
        _installed.clear()
