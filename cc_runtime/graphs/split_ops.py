"""Which operations end a CUDA-graph piece: attention and anything that cannot be captured.

A split op runs eagerly between two captured pieces. Attention is the usual one (its launch
configuration depends on per-sequence lengths that change every step), plus host syncs such as
``.item()``/``.tolist()``/``.cpu()``, which a CUDA graph cannot contain. Ops are matched by identity
(a Python function or a torch op overload / packet), by qualified op name (``"aten::_local_scalar_dense"``,
``"mylib::attention"``) or, for FX ``call_method`` nodes, by method name (``"item"``).

Python functions registered here are also kept opaque by the tracer (FX "autowrap"), so they show up
as single ``call_function`` nodes whatever they do inside. FX can only do that for functions the model
calls through a module-level (global) name; a closure or a method must become a torch op
(``torch.library.custom_op``) to be a split op.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# Tensor methods that synchronise with the host: never capturable.
HOST_SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "nonzero", "synchronize")


def _op_names(target: Any) -> set[str]:
    """Every name a torch op can be matched by: ``ns::name`` and ``ns::name.overload``."""
    names: set[str] = set()
    name = getattr(target, "name", None)
    if callable(name):  # OpOverload.name() -> "aten::add.Tensor"
        try:
            full = str(name())
            names.add(full)
            names.add(full.split(".", 1)[0])
        except Exception:  # noqa: BLE001
            pass
    qual = getattr(target, "_qualified_op_name", None)  # OpOverloadPacket
    if isinstance(qual, str):
        names.add(qual)
    return names


class SplitOpRegistry:
    """A set of split ops; copy the default one (:func:`default_registry`) to customise per runner."""

    def __init__(self, functions: Iterable[Any] = (), op_names: Iterable[str] = (),
                 methods: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._functions: dict[int, Any] = {id(f): f for f in functions}
        self._op_names: set[str] = set(op_names)
        self._methods: set[str] = set(methods)

    def copy(self) -> SplitOpRegistry:
        return SplitOpRegistry(self._functions.values(), self._op_names, self._methods)

    def register(self, target: Any) -> Any:
        """Register a Python function, a torch op (overload or packet) or an ``"ns::op"`` name.

        Returns ``target`` so it can be used as a decorator.
        """
        with self._lock:
            if isinstance(target, str):
                self._op_names.add(target)
            else:
                self._functions[id(target)] = target
                self._op_names.update(_op_names(target))
        return target

    def register_method(self, name: str) -> None:
        with self._lock:
            self._methods.add(name)

    def unregister(self, target: Any) -> None:
        with self._lock:
            if isinstance(target, str):
                self._op_names.discard(target)
                self._methods.discard(target)
            else:
                self._functions.pop(id(target), None)
                self._op_names.difference_update(_op_names(target))

    def python_functions(self) -> tuple[Callable[..., Any], ...]:
        """Plain Python functions, for the tracer to keep opaque (torch ops are opaque already)."""
        import types

        return tuple(f for f in self._functions.values() if isinstance(f, types.FunctionType))

    def is_split_node(self, node: Any) -> bool:
        """True when an FX node must run eagerly between pieces."""
        if node.op == "call_function":
            target = node.target
            if id(target) in self._functions:
                return True
            overloadpacket = getattr(target, "overloadpacket", None)  # OpOverload -> its packet
            if overloadpacket is not None and id(overloadpacket) in self._functions:
                return True
            return bool(_op_names(target) & self._op_names)
        if node.op == "call_method":
            return node.target in self._methods
        return False

    def __contains__(self, target: Any) -> bool:
        if isinstance(target, str):
            return target in self._op_names or target in self._methods
        return id(target) in self._functions


_DEFAULT: SplitOpRegistry | None = None


def default_registry() -> SplitOpRegistry:
    """The process-wide registry: SDPA, host syncs, and whatever was registered with the decorator."""
    global _DEFAULT
    if _DEFAULT is None:
        import torch
        import torch.nn.functional as F_

        reg = SplitOpRegistry(methods=HOST_SYNC_METHODS)
        reg.register(F_.scaled_dot_product_attention)
        reg.register(torch.ops.aten._local_scalar_dense.default)
        reg.register(torch.ops.aten.nonzero.default)
        _DEFAULT = reg
    return _DEFAULT


def register_split_op(fn: F) -> F:
    """Decorator: make ``fn`` a split op in the default registry (attention-like Python functions)."""
    default_registry().register(fn)
    return fn


def registry(split_ops: SplitOpRegistry | None = None) -> SplitOpRegistry:
    """The registry a runner uses: the given one, else the process-wide default."""
    return split_ops if split_ops is not None else default_registry()
