"""The launch-cost hook: a ``TorchDispatchMode`` pushed in every thread while emulation is active.

It sees every aten and custom op that reaches the dispatcher with a device tensor and charges
``profile.launch_extra_s`` per op (views and allocations launch nothing and are not charged). Copies
that bypassed the tensor-method hooks (C++ callers, ``aten._to_copy``) are charged here as copies.
Dispatch modes are thread-local: :mod:`.install` pushes one in the enabling thread and, through a
wrapper on ``threading.Thread._bootstrap_inner``, in every thread started afterwards. The mode's own
per-op cost (measured at install on host tensors) counts toward the extra instead of adding to it.
"""

from __future__ import annotations

import time
from typing import Any

from .charge import Emulator, is_pinned, nbytes_of

__all__ = ["calibrate_hook_overhead", "make_mode_class", "pop_mode_if_top", "push_mode"]


_NO_KERNEL = (
    "empty.memory_format", "empty_strided.default", "empty_like.default", "detach.default", "alias.default",
    "lift_fresh.default", "resize_.default", "set_.source_Storage_storage_offset", "set_.source_Storage",
    "set_.source_Tensor", "is_same_size.default", "record_stream.default", "sym_size.int", "sym_stride.int",
    "sym_numel.default", "sym_storage_offset.default", "_reshape_alias.default", "as_strided.default",
    "view.default", "_unsafe_view.default", "new_empty.default", "new_empty_strided.default",
)
_COPY_OPS = ("copy_.default", "_to_copy.default", "_local_scalar_dense.default")


def make_mode_class() -> type:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    def op(name: str) -> Any:
        packet, _, overload = name.partition(".")
        try:
            return getattr(getattr(torch.ops.aten, packet), overload)
        except AttributeError:
            return None

    no_kernel = {o for o in map(op, _NO_KERNEL) if o is not None}
    copy_ops = {o: n.split(".")[0] for n in _COPY_OPS if (o := op(n)) is not None}
    Tensor = torch.Tensor

    class CCLaunchCostMode(TorchDispatchMode):
        """Charges CC's extra launch cost per eager op on a device tensor (cc_runtime emulator)."""

        def __init__(self, emulator: Emulator) -> None:
            super().__init__()
            self.emulator = emulator

        @classmethod
        def ignore_compile_internals(cls) -> bool:
            return True  # let torch.compile compile; its graphs run without per-op charges

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            em = self.emulator
            if not em.active or em.in_copy() or func in no_kernel or func.is_view:
                return func(*args, **kwargs)
            started = time.perf_counter()
            kind = copy_ops.get(func)
            if kind is not None:
                return self._copy(kind, func, args, kwargs, started)
            if _touches_device(em, args, kwargs, Tensor):
                em.launch(started)
            return func(*args, **kwargs)

        def _copy(self, kind: str, func: Any, args: Any, kwargs: Any, started: float) -> Any:
            # Copies that bypassed the tensor-method hooks (torch.tensor(..., device=), C++ callers).
            em = self.emulator
            src = args[1] if kind == "copy_" else args[0]
            src_dev = em.is_dev(getattr(src, "device", None))
            if kind == "copy_":
                dst_dev = em.is_dev(args[0].device)
            elif kind == "_to_copy":
                dst_dev = em.is_dev(kwargs.get("device") or src.device)
            else:  # _local_scalar_dense: .item() and friends read one element back
                if not src_dev:
                    return func(*args, **kwargs)
                return em.copy("d2h", int(src.element_size()), src.device, lambda: func(*args, **kwargs),
                               started, False)
            if src_dev == dst_dev:
                if src_dev:
                    em.launch(time.perf_counter())
                return func(*args, **kwargs)
            direction = "h2d" if dst_dev else "d2h"
            dev = (kwargs.get("device") or args[0].device) if dst_dev else src.device
            if direction == "h2d":
                pinned = is_pinned(src)
            else:  # copy_ into an existing host tensor keeps its kind; _to_copy allocates one
                pinned = is_pinned(args[0]) if kind == "copy_" else bool(kwargs.get("pin_memory"))
            return em.copy(direction, nbytes_of(src), dev, lambda: func(*args, **kwargs), started, pinned)

    return CCLaunchCostMode


def _touches_device(em: Emulator, args: Any, kwargs: Any, tensor_type: Any) -> bool:
    for a in args:
        if isinstance(a, tensor_type):
            if em.is_dev(a.device):
                return True
        elif isinstance(a, (list, tuple)) and a and isinstance(a[0], tensor_type):
            if em.is_dev(a[0].device):
                return True
    dev = kwargs.get("device")
    if dev is not None:
        import torch

        return em.is_dev(torch.device(dev) if isinstance(dev, (str, int)) else dev)
    for v in kwargs.values():
        if isinstance(v, tensor_type) and em.is_dev(v.device):
            return True
    return False


def calibrate_hook_overhead(em: Emulator, mode_cls: type) -> float:
    """Per-op cost of the launch mode on an uncharged (host) op: mode minus no mode, best of 3."""
    import torch

    x = torch.zeros(1)

    def per_op(n: int = 300) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            x.add_(1)
        return (time.perf_counter() - t0) / n

    base = min(per_op() for _ in range(3))
    mode = mode_cls(em)
    push_mode(mode)
    try:
        with_mode = min(per_op() for _ in range(3))
    finally:
        pop_mode_if_top(mode)
    return max(0.0, with_mode - base)


def push_mode(mode: Any) -> None:
    import torch

    torch._C._push_on_torch_dispatch_stack(mode)


def pop_mode_if_top(mode: Any) -> bool:
    import torch

    n = torch._C._len_torch_dispatch_stack()
    if n and torch._C._get_dispatch_stack_at(n - 1) is mode:
        torch._C._pop_torch_dispatch_stack(None)
        return True
    return False
