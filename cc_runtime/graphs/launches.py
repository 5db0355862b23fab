"""Count kernel launches per forward by counting the ATen ops that reach a kernel.

A ``TorchDispatchMode`` sees every ATen op after autograd and composite decomposition, which is close
to one kernel launch per op on CUDA (a few ops launch two; views, shape queries and allocations launch
none and are not counted). Replayed CUDA graphs dispatch nothing, so they count zero launches; the CPU
stand-in replay is excluded explicitly and counted as one replay by the runner instead.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .runner import in_simulated_replay

# Ops that allocate or only change metadata: no kernel.
_NO_KERNEL = frozenset({
    "empty", "empty_strided", "empty_like", "view", "_unsafe_view", "reshape", "_reshape_alias", "t",
    "transpose", "permute", "expand", "slice", "select", "unsqueeze", "squeeze", "alias", "detach",
    "as_strided", "split", "split_with_sizes", "chunk", "unbind", "lift_fresh", "sym_size", "sym_stride",
    "sym_numel", "sym_storage_offset", "view_as_real", "view_as_complex", "_unsafe_split",
    "unflatten", "flatten", "contiguous", "set_", "resize_",
})


def _make_mode_class() -> type:
    from torch.utils._python_dispatch import TorchDispatchMode

    class _LaunchCountingMode(TorchDispatchMode):
        def __init__(self, owner: LaunchCounter) -> None:
            super().__init__()
            self.owner = owner

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            if not in_simulated_replay():
                name = getattr(getattr(func, "overloadpacket", func), "__name__", str(func))
                if name not in _NO_KERNEL and not getattr(func, "is_view", False):
                    self.owner.count += 1
                    self.owner.by_op[name] += 1
            return out

    return _LaunchCountingMode


class LaunchCounter:
    """``with LaunchCounter() as c: model(x)``; then ``c.count`` and ``c.by_op``."""

    def __init__(self) -> None:
        self.count = 0
        self.by_op: Counter[str] = Counter()
        self._mode: Any = None

    def __enter__(self) -> LaunchCounter:
        self._mode = _make_mode_class()(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)
        self._mode = None
