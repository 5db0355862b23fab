"""A tiny Llama-shaped decoder (random seeded weights, no downloads) for tests and benchmarks.

RMSNorm, rotary embeddings, grouped-query attention, SwiGLU MLP, tied nothing. The forward takes flat
token tensors ``(input_ids[n], positions[n]) -> logits[n, vocab]``; which tokens belong to which
sequence, and what each sequence has cached, lives in an :class:`AttentionBatch` set around the call
(``with batch.active(): model(ids, pos)``), as in vLLM's forward context. Attention is the registered
split op :func:`tiny_attention`, so a batch can mix prefill sequences (many new tokens) and decode
sequences (one new token over a cached prefix) in one flat token dimension. Rows past the batch's
real token count (padding) come out of attention as zeros.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..graphs.split_ops import register_split_op


@dataclass(frozen=True)
class TinyLlamaConfig:
    vocab_size: int = 512
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 688
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6
    max_positions: int = 4096

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class KVCache:
    """Per-layer, per-sequence past keys and values (plain tensors: small and obviously correct)."""

    def __init__(self, num_layers: int) -> None:
        self.keys: list[dict[Any, torch.Tensor]] = [{} for _ in range(num_layers)]
        self.values: list[dict[Any, torch.Tensor]] = [{} for _ in range(num_layers)]

    def length(self, seq_id: Any) -> int:
        past = self.keys[0].get(seq_id)
        return 0 if past is None else int(past.shape[0])


@dataclass
class AttentionBatch:
    """Which flat tokens belong to which sequence. ``query_lens[i]`` new tokens of sequence
    ``seq_ids[i]``, laid out one sequence after another; a decode sequence has one new token."""

    query_lens: list[int]
    seq_ids: list[Any] | None = None
    cache: KVCache | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return sum(self.query_lens)

    @contextlib.contextmanager
    def active(self) -> Iterator[AttentionBatch]:
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    def positions(self, device: Any = None) -> torch.Tensor:
        """Each new token's position: its sequence's cached length plus its index."""
        pos: list[int] = []
        for i, n in enumerate(self.query_lens):
            start = self.cache.length(self.seq_ids[i]) if self.cache is not None and self.seq_ids else 0
            pos.extend(range(start, start + n))
        return torch.tensor(pos, dtype=torch.long, device=device)


_CURRENT: contextvars.ContextVar[AttentionBatch | None] = contextvars.ContextVar("tiny_llama_batch",
                                                                                 default=None)


def dummy_batch(num_tokens: int) -> contextlib.AbstractContextManager[Any]:
    """Capture-time metadata: one prefill sequence of ``num_tokens`` tokens, no cache."""
    return AttentionBatch([num_tokens]).active()


@register_split_op
def tiny_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, layer: int,
                   num_heads: int, num_kv_heads: int) -> torch.Tensor:
    """Causal GQA attention over the flat token dimension, per sequence of the current batch.

    Eager on purpose (a split op): the per-sequence loop and cache lengths change every step. Writes
    into ``out`` and returns it (vLLM's "attention with output"): the caller allocates ``out`` (zeros,
    so padding rows stay zero) inside the captured piece, so the result already sits at a graph
    address and the piecewise runner has nothing to copy; the zero-fill is part of a graph, too.
    """
    batch = _CURRENT.get()
    if batch is None:
        batch = AttentionBatch([q.shape[0]])  # plain call outside any batch: one sequence
    head_dim = q.shape[-1] // num_heads
    groups = num_heads // num_kv_heads
    offset = 0
    for i, n in enumerate(batch.query_lens):
        qs = q[offset:offset + n].view(n, num_heads, head_dim).transpose(0, 1)
        ks = k[offset:offset + n].view(n, num_kv_heads, head_dim)
        vs = v[offset:offset + n].view(n, num_kv_heads, head_dim)
        past = 0
        if batch.cache is not None and batch.seq_ids is not None:
            sid = batch.seq_ids[i]
            pk, pv = batch.cache.keys[layer].get(sid), batch.cache.values[layer].get(sid)
            if pk is not None and pv is not None:
                past = int(pk.shape[0])
                ks, vs = torch.cat([pk, ks]), torch.cat([pv, vs])
            else:
                # q/k/v may live in graph memory that the next replay overwrites: the cache owns a copy
                ks, vs = ks.clone(), vs.clone()
            batch.cache.keys[layer][sid], batch.cache.values[layer][sid] = ks, vs
        # 4-D (batch of one) so SDPA can pick its fused kernels on a GPU
        qs = qs.unsqueeze(0)
        kh, vh = ks.transpose(0, 1), vs.transpose(0, 1)
        if groups > 1:
            kh, vh = kh.repeat_interleave(groups, dim=0), vh.repeat_interleave(groups, dim=0)
        kh, vh = kh.unsqueeze(0), vh.unsqueeze(0)
        if past == 0:
            o = F.scaled_dot_product_attention(qs, kh, vh, is_causal=True)
        elif n == 1:
            o = F.scaled_dot_product_attention(qs, kh, vh)
        else:
            rows = torch.arange(n, device=q.device).unsqueeze(1) + past
            mask = torch.arange(past + n, device=q.device).unsqueeze(0) <= rows
            o = F.scaled_dot_product_attention(qs, kh, vh, attn_mask=mask)
        out[offset:offset + n] = o[0].transpose(0, 1).reshape(n, num_heads * head_dim)
        offset += n
    return out


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype) * self.weight


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: TinyLlamaConfig, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.layer = layer
        hd = cfg.head_dim
        self.q_size, self.kv_size = cfg.num_heads * hd, cfg.num_kv_heads * hd
        self.qkv_proj = nn.Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=False)
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.reshape(-1, cfg.num_heads, cfg.head_dim)
        k = k.reshape(-1, cfg.num_kv_heads, cfg.head_dim)
        q = (q * cos + _rotate_half(q) * sin).flatten(1)
        k = k * cos + _rotate_half(k) * sin
        # GQA: repeat the KV heads here, inside the captured piece, rather than in eager attention
        # (two launches fewer per layer under CC; the cache then holds the repeated heads).
        groups = cfg.num_heads // cfg.num_kv_heads
        k = k.unsqueeze(2).expand(-1, cfg.num_kv_heads, groups, cfg.head_dim).reshape(-1, self.q_size)
        v = v.reshape(-1, cfg.num_kv_heads, 1, cfg.head_dim).expand(-1, cfg.num_kv_heads, groups, cfg.head_dim)
        v = v.reshape(-1, self.q_size)
        o = tiny_attention(q, k, v, torch.zeros_like(q), self.layer, cfg.num_heads, cfg.num_heads)
        return self.o_proj(o)


class MLP(nn.Module):
    def __init__(self, cfg: TinyLlamaConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TinyLlamaConfig, layer: int) -> None:
        super().__init__()
        self.input_norm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.attn = Attention(cfg, layer)
        self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.input_norm(x), cos, sin)
        return x + self.mlp(self.post_attn_norm(x))


class TinyLlama(nn.Module):
    cos_cache: torch.Tensor
    sin_cache: torch.Tensor

    def __init__(self, cfg: TinyLlamaConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or TinyLlamaConfig()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
        freqs = torch.outer(torch.arange(cfg.max_positions, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cache", emb.cos(), persistent=False)
        self.register_buffer("sin_cache", emb.sin(), persistent=False)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        cos = self.cos_cache[positions].unsqueeze(1)
        sin = self.sin_cache[positions].unsqueeze(1)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def build_tiny_llama(cfg: TinyLlamaConfig | None = None, *, seed: int = 0, device: Any = "cpu",
                     dtype: torch.dtype = torch.float32) -> TinyLlama:
    """Random weights from ``seed`` (the same model on every machine), in eval mode."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = TinyLlama(cfg)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.uniform_(0.8, 1.2)
                else:
                    p.normal_(0.0, 0.02 if "embed" not in name else 1.0)
    finally:
        torch.random.set_rng_state(gen_state)
    return model.to(device=device, dtype=dtype).eval()


def example_inputs(num_tokens: int, cfg: TinyLlamaConfig | None = None, *, seed: int = 0,
                   device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids and positions 0..n-1 (one prefill sequence)."""
    cfg = cfg or TinyLlamaConfig()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (num_tokens,), generator=g).to(device)
    return ids, torch.arange(num_tokens, device=device)


def make_batch(query_lens: Sequence[int], cfg: TinyLlamaConfig | None = None, *, seed: int = 0,
               device: Any = "cpu", cache: KVCache | None = None, seq_ids: Sequence[Any] | None = None,
               ) -> tuple[AttentionBatch, torch.Tensor, torch.Tensor]:
    """A batch (prefill and/or decode sequences) with random ids and the right positions."""
    cfg = cfg or TinyLlamaConfig()
    batch = AttentionBatch(list(query_lens), list(seq_ids) if seq_ids is not None else None, cache)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (batch.num_tokens,), generator=g).to(device)
    return batch, ids, batch.positions(device)
