"""Piecewise CUDA graphs for prefill and mixed batches (split at attention, replay the rest).

``PiecewiseCudaGraphRunner(model, example_inputs)`` works with any torch.fx-traceable model whose
inputs are flat over tokens; see :mod:`cc_runtime.graphs.runner` for the design. Importing this
package imports torch; ``import cc_runtime`` does not import it.
"""

from __future__ import annotations

from .buckets import DEFAULT_MAX_TOKENS, Buckets, default_capture_sizes
from .launches import LaunchCounter
from .runner import GraphAddressError, GraphStats, PiecewiseCudaGraphRunner, in_simulated_replay
from .split_ops import SplitOpRegistry, default_registry, register_split_op
from .splitting import SplitResult, TraceError, split

__all__ = [
    "DEFAULT_MAX_TOKENS", "Buckets", "GraphAddressError", "GraphStats", "LaunchCounter",
    "PiecewiseCudaGraphRunner", "SplitOpRegistry", "SplitResult", "TraceError", "default_capture_sizes",
    "default_registry", "in_simulated_replay", "register_split_op", "split",
]
