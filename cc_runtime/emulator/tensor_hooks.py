"""torch.Tensor method hooks that route host<->device copies through :class:`~.charge.Emulator`.

Global (attribute lookups happen in every thread). Each hook only classifies the call (direction,
bytes, pinned or pageable host side) and hands the real call to ``Emulator.copy``. One guard decides
whether a hook stays out of the way: while compiling, while emulation is inactive, and while a
torch-function mode is active in a thread whose launch mode will see the copy at the dispatcher
(``Emulator.charged_at_dispatch``: the function mode may answer the copy without making one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .charge import Emulator, is_pinned, nbytes_of

perf_counter = time.perf_counter

__all__ = ["hook_copy_", "hook_cuda", "hook_d2h", "hook_factory", "hook_is_pinned", "hook_to"]


def _guard(em: Emulator, dispatched: bool = True) -> Callable[[], bool]:
    """``passthrough()``: True when the hook must call the original untouched."""
    import torch

    is_compiling = torch.compiler.is_compiling
    tf_mode = torch._C._is_torch_function_mode_enabled

    def passthrough() -> bool:
        return bool(is_compiling() or not em.active or (dispatched and tf_mode() and em.charged_at_dispatch()))

    return passthrough


def hook_to(em: Emulator, orig: Callable[..., Any]) -> Callable[..., Any]:
    import torch

    parse_to = torch._C._nn._parse_to
    passthrough = _guard(em)

    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not (args or kwargs) or passthrough():
            return orig(self, *args, **kwargs)
        started = perf_counter()
        try:
            target = parse_to(*args, **kwargs)[0]
        except Exception:  # noqa: BLE001 - let torch raise its own error for bad arguments
            return orig(self, *args, **kwargs)
        src_dev, dst_dev = em.is_dev(self.device), em.is_dev(target)
        if target is None or src_dev == dst_dev:
            return orig(self, *args, **kwargs)
        # D2H into a new tensor: torch allocates it pageable.
        direction, dev, pinned = ("h2d", target, is_pinned(self)) if dst_dev else ("d2h", self.device, False)
        return em.copy(direction, nbytes_of(self), dev, lambda: orig(self, *args, **kwargs), started, pinned)

    return to


def hook_copy_(em: Emulator, orig: Callable[..., Any]) -> Callable[..., Any]:
    passthrough = _guard(em)

    def copy_(self: Any, src: Any, *args: Any, **kwargs: Any) -> Any:
        if passthrough():
            return orig(self, src, *args, **kwargs)
        started = perf_counter()
        dst_dev, src_dev = em.is_dev(self.device), em.is_dev(getattr(src, "device", None))
        if not (dst_dev or src_dev):
            return orig(self, src, *args, **kwargs)
        direction = "d2d" if dst_dev and src_dev else ("h2d" if dst_dev else "d2h")
        dev = self.device if dst_dev else src.device
        pinned = direction == "d2d" or is_pinned(src if direction == "h2d" else self)
        return em.copy(direction, nbytes_of(src), dev, lambda: orig(self, src, *args, **kwargs), started, pinned)

    return copy_


def hook_d2h(em: Emulator, orig: Callable[..., Any], whole: bool, dispatched: bool = True) -> Callable[..., Any]:
    """``cpu()``, ``tolist()`` (whole tensor) and ``item()`` (one element) read device memory back
    into pageable host memory.

    ``dispatched``: the read reaches the dispatcher as a copy op the launch mode charges."""
    passthrough = _guard(em, dispatched)

    def d2h(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not em.is_dev(self.device) or passthrough():
            return orig(self, *args, **kwargs)
        started = perf_counter()
        nbytes = nbytes_of(self) if whole else int(self.element_size())
        return em.copy("d2h", nbytes, self.device, lambda: orig(self, *args, **kwargs), started, False)

    d2h.__name__ = getattr(orig, "__name__", "d2h")
    return d2h


def hook_cuda(em: Emulator, orig: Callable[..., Any]) -> Callable[..., Any]:
    passthrough = _guard(em)

    def cuda(self: Any, device: Any = None, *args: Any, **kwargs: Any) -> Any:
        if em.is_dev(self.device) or passthrough():
            return orig(self, device, *args, **kwargs)
        started = perf_counter()
        target = em.backend.default_device(device)
        return em.copy("h2d", nbytes_of(self), target, lambda: orig(self, device, *args, **kwargs), started,
                       is_pinned(self))

    return cuda


def hook_factory(em: Emulator, orig: Callable[..., Any], device_pos: int | None) -> Callable[..., Any]:
    """``torch.tensor(data, device=...)`` / ``torch.as_tensor``: the H2D copy happens inside C++ with
    the Python dispatch key excluded, so neither the dispatch mode nor the method hooks see it."""
    import torch

    passthrough = _guard(em, dispatched=False)
    Tensor = torch.Tensor

    def factory(data: Any, *args: Any, **kwargs: Any) -> Any:
        if passthrough():
            return orig(data, *args, **kwargs)
        started = perf_counter()
        device = kwargs.get("device")
        if device is None and device_pos is not None and len(args) > device_pos:
            device = args[device_pos]
        if device is None:
            return orig(data, *args, **kwargs)
        try:
            device = torch.device(device)
        except Exception:  # noqa: BLE001 - torch raises its own error below
            return orig(data, *args, **kwargs)
        is_tensor = isinstance(data, Tensor)
        if not em.is_dev(device) or (is_tensor and em.is_dev(data.device)):
            return orig(data, *args, **kwargs)
        # Python data is staged by torch in pageable memory; a host tensor keeps its own kind.
        return em.copy("h2d", None, device, lambda: orig(data, *args, **kwargs), started,
                       is_tensor and is_pinned(data))

    factory.__name__ = getattr(orig, "__name__", "factory")
    factory.__doc__ = getattr(orig, "__doc__", None)
    return factory


def hook_is_pinned(em: Emulator, orig: Callable[..., Any]) -> Callable[..., Any]:
    """``Tensor.is_pinned()`` under a profile with ``pinned_reads_unpinned``: False for host memory while
    emulation is active, as torch's ``CUDAHooks::isPinnedPtr`` reads under CC (the pointer type comes
    back managed, not host). The emulator's own cost model asks torch's C method (:func:`.charge.is_pinned`)."""

    def is_pinned(self: Any, *args: Any, **kwargs: Any) -> bool:
        pinned = bool(orig(self, *args, **kwargs))
        return False if pinned and em.active and self.device.type == "cpu" else pinned

    is_pinned.__name__ = "is_pinned"
    is_pinned.__doc__ = getattr(orig, "__doc__", None)
    return is_pinned
