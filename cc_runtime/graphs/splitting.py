"""Trace a model with torch.fx and cut it at split ops, keeping the original op order.

``torch.fx.symbolic_trace`` (a stable API from torch 2.0 through 2.14) records the forward as a flat
graph of calls; registered Python split ops are kept opaque ("autowrap"). ``split_module`` with
``keep_original_order=True`` (as vLLM does) then yields ``submod_0, submod_1, ...``: capturable pieces
alternating with single split-op pieces, called in exactly the order the model called them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .split_ops import SplitOpRegistry

log = logging.getLogger("cc_runtime.graphs")


@dataclass
class SplitResult:
    module: Any  # torch.fx.GraphModule: the stitched model; calls submod_i in order
    piece_names: list[str]  # capturable pieces, in call order
    split_names: list[str]  # eager split-op pieces, in call order
    order: list[str]  # every submodule name in call order


class TraceError(RuntimeError):
    """The model could not be traced by torch.fx (data-dependent control flow, ...)."""


def trace(model: Any, split_ops: SplitOpRegistry) -> Any:
    import torch.fx as fx

    tracer = fx.Tracer(autowrap_functions=split_ops.python_functions())
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # noqa: BLE001 - re-raised with what to do about it
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}: {exc}. Register the untraceable part as a "
            "split op (cc_runtime.graphs.register_split_op) or run the model eagerly."
        ) from exc
    name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, name)


def split(model: Any, split_ops: SplitOpRegistry) -> SplitResult:
    """Trace ``model`` and split it; the result computes exactly what ``model`` computes."""
    from torch.fx.passes.split_module import split_module

    gm = trace(model, split_ops)
    partition_of: dict[Any, int] = {}
    split_ids: set[int] = set()
    current = 0
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if split_ops.is_split_node(node):
            current += 1
            partition_of[node] = current
            split_ids.add(current)
            current += 1
        else:
            partition_of[node] = current
    stitched = split_module(gm, model, lambda node: partition_of[node], keep_original_order=True)

    order: list[str] = []
    pieces: list[str] = []
    splits: list[str] = []
    for node in stitched.graph.nodes:
        if node.op != "call_module":
            continue
        order.append(node.target)
        index = int(str(node.target).rsplit("_", 1)[1])
        (splits if index in split_ids else pieces).append(node.target)
    log.debug("split %s into %d pieces around %d split ops", type(model).__name__, len(pieces), len(splits))
    return SplitResult(stitched, pieces, splits, order)
