"""Piecewise CUDA graphs for any traceable torch model, keyed by padded token count.

Under CC every eager kernel launch costs about twice as much, so prefill and mixed batches, which
usually run eagerly, pay most. The runner splits the model at split ops (attention, host syncs), keeps
everything between them as CUDA graphs (one per piece and token-count bucket), and replays them:
hundreds of launches per forward become a few replays plus the eager split ops.

Design (after vLLM's ``cuda_piecewise_backend``/``cuda_graph``):
- every forward is padded up to the nearest captured size; above the largest it runs eagerly;
- all pieces and sizes share one memory pool; sizes are captured largest first;
- the runner owns the static input buffers (max-size, each size uses a prefix slice); a piece input
  that comes from an eager split op is copied into a runner-owned buffer at replay, an input that comes
  from the previous graph is already at its captured address and is not copied;
- capture-time outputs are kept only as non-owning aliases; the last piece's output is turned into
  one inside the capture, so its memory goes straight back to the pool;
- ``debug=True`` checks on every replay that inputs expected at their captured address are there.
Split ops must not keep references to their inputs after they return (a KV cache stores copies):
those inputs live in graph memory that the next replay overwrites, as with any CUDA graph output.
Mixed batches (prefill and decode tokens in one flat token dimension) need nothing special: the graph
is keyed by padded token count only; per-sequence structure lives in the split ops' metadata.

Without CUDA (or with ``use_cuda_graphs=False``) the same path runs: the same splitting, buckets,
padding, buffers and address bookkeeping, but a "replay" calls the piece on its static inputs and
copies the results into the captured output buffers. That is what CPU CI tests.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .buckets import DEFAULT_MAX_TOKENS, Buckets, default_capture_sizes
from .split_ops import SplitOpRegistry, registry
from .splitting import SplitResult, split
from .weakref import weak_ref_tensor, weak_ref_tensors

log = logging.getLogger("cc_runtime.graphs")

_SIMULATED_REPLAY: contextvars.ContextVar[bool] = contextvars.ContextVar("cc_runtime_simulated_replay",
                                                                          default=False)


def in_simulated_replay() -> bool:
    """True while a CPU stand-in replay runs a piece: its ops are one "replay", not launches."""
    return _SIMULATED_REPLAY.get()


class GraphAddressError(RuntimeError):
    """Debug mode: a piece input was not at the address its graph was captured with."""


class _Mode(enum.Enum):
    EAGER = "eager"
    CAPTURE = "capture"
    REPLAY = "replay"


@dataclass
class GraphStats:
    forwards: int = 0
    graph_forwards: int = 0
    eager_forwards: int = 0  # above the maximum size, or inputs the runner cannot take
    replays: int = 0  # piece replays (one per captured piece per graph forward)
    input_copies: int = 0  # split-op outputs copied into runner buffers
    padded_tokens: int = 0
    piece_fallbacks: int = 0  # pieces run eagerly inside a graph forward (a constant argument changed)


@dataclass
class _Entry:
    graph: Any  # torch.cuda.CUDAGraph, or None for the CPU stand-in
    args: list[Any]  # captured inputs: runner buffers, weak aliases of earlier outputs, constants
    # per input: True = copied into a runner buffer on replay; False = an earlier graph's output or a
    # runner input buffer, already in place; None = a model weight/buffer (constant address)
    copied: list[bool | None]
    output: Any


@dataclass
class _State:
    mode: _Mode = _Mode.EAGER
    bucket: int = 0
    stable_ptrs: set[int] = field(default_factory=set)


def _tensors(value: Any) -> list[Any]:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _map_tensors(value: Any, fn: Callable[[Any], Any]) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(_map_tensors(v, fn) for v in value)
    if isinstance(value, list):
        return [_map_tensors(v, fn) for v in value]
    return value


def _make_piece_module(runner: PiecewiseCudaGraphRunner, name: str, fn: Any, is_last: bool) -> Any:
    import torch

    class CapturedPiece(torch.nn.Module):
        """One capturable piece; eager, capturing or replaying as the runner's state says."""

        def __init__(self) -> None:
            super().__init__()
            self.fn = fn
            self.piece_name = name
            self.is_last = is_last

        def forward(self, *args: Any) -> Any:
            mode = runner._state.mode
            if mode is _Mode.CAPTURE:
                return runner._capture_piece(self, args)
            if mode is _Mode.REPLAY:
                return runner._replay_piece(self, args)
            return self.fn(*args)

    return CapturedPiece()


class PiecewiseCudaGraphRunner:
    """Run ``model(*inputs)`` (every input has the token count as dimension 0) through piecewise graphs.

    ``example_inputs``: one example call (any token count) giving each input's dtype, device and
    trailing shape. ``batch_context(n)``: a context manager that sets up the split ops' metadata for a
    dummy batch of ``n`` tokens during capture (e.g. one prefill sequence of n tokens).
    Call the runner inside the real batch's metadata context, like the model itself. As with any
    CUDA graph, a graph forward's outputs live in graph memory: they are valid until the next call
    (``.clone()`` what must outlive it). Not thread-safe: one runner per model per thread.
    """

    def __init__(
        self,
        model: Any,
        example_inputs: Sequence[Any],
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        capture_sizes: Sequence[int] | None = None,
        split_ops: SplitOpRegistry | None = None,
        batch_context: Callable[[int], contextlib.AbstractContextManager[Any]] | None = None,
        use_cuda_graphs: bool | None = None,
        debug: bool = False,
        warmup_iters: int = 1,
        pad_value: int | float = 0,
    ) -> None:
        import torch

        if not example_inputs:
            raise ValueError("example_inputs must name at least one input tensor")
        self.model = model
        self.device = example_inputs[0].device
        if use_cuda_graphs is None:
            use_cuda_graphs = self.device.type == "cuda"
        if use_cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need CUDA inputs, got {self.device}")
        self.use_cuda_graphs = bool(use_cuda_graphs)
        self.buckets = Buckets(capture_sizes if capture_sizes is not None else default_capture_sizes(max_tokens))
        self.debug = debug
        self.warmup_iters = max(0, int(warmup_iters))
        self.pad_value = pad_value
        self.batch_context = batch_context or (lambda n: contextlib.nullcontext())
        self.split_ops = registry(split_ops)
        self.stats = GraphStats()
        self.captured = False

        self.split: SplitResult = split(model, self.split_ops)
        for i, name in enumerate(self.split.piece_names):
            original = getattr(self.split.module, name)
            is_last = i == len(self.split.piece_names) - 1
            setattr(self.split.module, name, _make_piece_module(self, name, original, is_last))

        self._state = _State()
        self._entries: dict[tuple[str, int], _Entry] = {}
        self._buffers: dict[tuple[Any, ...], Any] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.use_cuda_graphs else None
        self._static_inputs = [
            torch.full((self.buckets.max, *x.shape[1:]), pad_value, dtype=x.dtype, device=x.device)
            for x in example_inputs
        ]
        # Weights and buffers (get_attr in the traced graph) reach pieces as inputs: never copy them.
        self._constant_ptrs = {t.data_ptr() for t in (*model.parameters(), *model.buffers())}
        self._dirty_rows = 0  # rows of the static inputs that may hold an earlier batch's tokens

    # -- public -------------------------------------------------------------------------------
    @property
    def num_pieces(self) -> int:
        return len(self.split.piece_names)

    @property
    def num_split_ops(self) -> int:
        return len(self.split.split_names)

    def bucket_for(self, num_tokens: int) -> int | None:
        return self.buckets.bucket_for(num_tokens)

    def capture(self) -> None:
        """Capture every piece at every size, largest first, into one shared pool."""
        import torch

        if self.captured:
            return
        with torch.no_grad():
            for size in self.buckets.capture_order():
                args = [s[:size] for s in self._static_inputs]
                with self.batch_context(size):
                    for _ in range(self.warmup_iters if self.use_cuda_graphs else 0):
                        self.split.module(*args)  # lazy inits (cuBLAS handles, workspaces) stay out of graphs
                    self._state = _State(_Mode.CAPTURE, size, {a.data_ptr() for a in args})
                    try:
                        self.split.module(*args)
                    finally:
                        self._state = _State()
                if self.use_cuda_graphs:
                    torch.cuda.synchronize(self.device)
        self.captured = True
        log.info("cc_runtime: captured %d pieces x %d sizes (max %d tokens, cuda graphs=%s)",
                 self.num_pieces, len(self.buckets), self.buckets.max, self.use_cuda_graphs)

    def __call__(self, *inputs: Any) -> Any:
        import torch

        self.stats.forwards += 1
        reason = self._unsupported(inputs)
        num_tokens = int(inputs[0].shape[0]) if inputs and isinstance(inputs[0], torch.Tensor) else 0
        bucket = self.buckets.bucket_for(num_tokens) if reason is None else None
        if bucket is None:
            if reason is not None:
                log.debug("cc_runtime: eager forward: %s", reason)
            self.stats.eager_forwards += 1
            return self.model(*inputs)
        if not self.captured:
            self.capture()
        with torch.no_grad():
            stale = min(self._dirty_rows, bucket)
            for static, x in zip(self._static_inputs, inputs, strict=True):
                static[:num_tokens].copy_(x)
                if stale > num_tokens:
                    static[num_tokens:stale].fill_(self.pad_value)  # padding is deterministic, never old tokens
            self._dirty_rows = max(num_tokens, self._dirty_rows if self._dirty_rows > bucket else 0)
            self.stats.padded_tokens += bucket - num_tokens
            self._state = _State(_Mode.REPLAY, bucket)
            try:
                out = self.split.module(*[s[:bucket] for s in self._static_inputs])
            finally:
                self._state = _State()
        self.stats.graph_forwards += 1
        return _map_tensors(out, lambda t: t[:num_tokens] if t.dim() and t.shape[0] == bucket else t)

    # -- capture / replay of one piece ----------------------------------------------------------
    def _capture_piece(self, piece: Any, args: tuple[Any, ...]) -> Any:
        import torch

        bucket = self._state.bucket
        static_args: list[Any] = []
        copied: list[bool | None] = []
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor) and a.data_ptr() in self._constant_ptrs:
                static_args.append(a)  # a weight or buffer: same address every call, owned by the model
                copied.append(None)
            elif isinstance(a, torch.Tensor) and a.data_ptr() not in self._state.stable_ptrs:
                buf = self._buffer(("in", piece.piece_name, i), a, bucket)
                buf.copy_(a)
                static_args.append(buf)
                copied.append(True)
            else:
                static_args.append(a)
                copied.append(False)
        if self.use_cuda_graphs:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                out = piece.fn(*static_args)
                if piece.is_last:
                    out = weak_ref_tensors(out)  # nothing after it reads it: memory back to the pool now
            graph.replay()  # capturing ran nothing: give the eager split ops that follow real values
            entry_out = weak_ref_tensors(out)
            result = out  # strong until this capture forward ends, so later pieces cannot reuse it
            # Stable inputs are referenced weakly too: a strong reference would pin the pool per size.
            static_args = [weak_ref_tensor(a) if c is False else a for a, c in zip(static_args, copied, strict=True)]
        else:
            graph = None
            out = piece.fn(*static_args)
            counter = iter(range(1 << 30))
            entry_out = _map_tensors(out, lambda t: self._stable_copy(("out", piece.piece_name, next(counter)),
                                                                      t, bucket))
            result = entry_out
        self._entries[(piece.piece_name, bucket)] = _Entry(graph, static_args, copied, entry_out)
        self._state.stable_ptrs.update(t.data_ptr() for t in _tensors(entry_out))
        return result

    def _stable_copy(self, key: tuple[Any, ...], t: Any, bucket: int) -> Any:
        """CPU stand-in for graph-pool memory: outputs live at the same address on every replay."""
        buf = self._buffer(key, t, bucket)
        buf.copy_(t)
        return buf

    def _replay_piece(self, piece: Any, args: tuple[Any, ...]) -> Any:
        import torch

        entry = self._entries.get((piece.piece_name, self._state.bucket))
        if entry is None or len(entry.args) != len(args):
            raise RuntimeError(f"cc_runtime: no graph for {piece.piece_name} at {self._state.bucket} tokens")
        for i, (a, s) in enumerate(zip(args, entry.args, strict=True)):
            if isinstance(a, torch.Tensor):
                if a.data_ptr() == s.data_ptr() and a.shape == s.shape:
                    continue
                if a.shape != s.shape or a.dtype != s.dtype:
                    return self._piece_fallback(piece, args, f"input {i} is {tuple(a.shape)}/{a.dtype}, "
                                                             f"captured {tuple(s.shape)}/{s.dtype}")
                if entry.copied[i] is not True and self.debug:
                    raise GraphAddressError(
                        f"{piece.piece_name} input {i}: address {a.data_ptr():#x}, captured at "
                        f"{s.data_ptr():#x} ({self._state.bucket} tokens)")
                s.copy_(a)
                self.stats.input_copies += 1
            elif a != s:
                return self._piece_fallback(piece, args, f"constant input {i} is {a!r}, captured {s!r}")
        self.stats.replays += 1
        if entry.graph is not None:
            entry.graph.replay()
            return entry.output
        token = _SIMULATED_REPLAY.set(True)
        try:
            out = piece.fn(*entry.args)
            for dst, src in zip(_tensors(entry.output), _tensors(out), strict=True):
                dst.copy_(src)
        finally:
            _SIMULATED_REPLAY.reset(token)
        return entry.output

    def _piece_fallback(self, piece: Any, args: tuple[Any, ...], why: str) -> Any:
        if self.debug:
            raise GraphAddressError(f"{piece.piece_name}: {why}")
        if self.stats.piece_fallbacks == 0:
            log.warning("cc_runtime: %s runs eagerly: %s", piece.piece_name, why)
        self.stats.piece_fallbacks += 1
        return piece.fn(*args)

    def _buffer(self, key: tuple[Any, ...], like: Any, bucket: int) -> Any:
        """A runner-owned buffer shaped like ``like``: a prefix of one max-size buffer when ``like``
        is a dense token-major tensor (sizes are captured largest first), else one per size."""
        import torch

        dense = like.dim() >= 1 and like.shape[0] == bucket and like.is_contiguous()
        if dense:
            buf = self._buffers.get(key)
            if buf is not None and buf.shape[1:] == like.shape[1:] and buf.dtype == like.dtype:
                return buf[:bucket]
            if buf is None:
                buf = torch.empty((self.buckets.max, *like.shape[1:]), dtype=like.dtype, device=like.device)
                self._buffers[key] = buf
                return buf[:bucket]
        per_size = (*key, bucket)
        buf = self._buffers.get(per_size)
        if buf is None:
            buf = torch.empty(like.shape, dtype=like.dtype, device=like.device)
            self._buffers[per_size] = buf
        return buf

    def _unsupported(self, inputs: Sequence[Any]) -> str | None:
        import torch

        if len(inputs) != len(self._static_inputs):
            return f"{len(inputs)} inputs, runner built for {len(self._static_inputs)}"
        n = None
        for i, (x, s) in enumerate(zip(inputs, self._static_inputs, strict=True)):
            if not isinstance(x, torch.Tensor):
                return f"input {i} is not a tensor"
            if x.dtype != s.dtype or x.device != s.device or x.shape[1:] != s.shape[1:] or x.dim() == 0:
                return f"input {i} is {tuple(x.shape)}/{x.dtype}/{x.device}, expected (n, " \
                       f"{', '.join(map(str, s.shape[1:]))})/{s.dtype}/{s.device}"
            if n is None:
                n = x.shape[0]
            elif x.shape[0] != n:
                return f"input {i} has {x.shape[0]} tokens, input 0 has {n}"
        return None

    def describe(self) -> dict[str, Any]:
        return {"pieces": self.num_pieces, "split_ops": self.num_split_ops, "sizes": len(self.buckets),
                "max_tokens": self.buckets.max, "cuda_graphs": self.use_cuda_graphs, "captured": self.captured}
