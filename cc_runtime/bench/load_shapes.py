"""Checkpoints for ``cc-runtime bench load``: real models' tensor lists, bytes scaled to this machine.

Tensor names, counts, dtypes and shard counts are the real ones (from each model's ``config.json`` on
the Hugging Face hub and its published ``model.safetensors.index.json``):

* ``dense``: Llama-3-8B (hidden 4096, 32 layers, 32/8 heads of 128, MLP 14336, vocab 128256, untied
  ``lm_head``): 291 tensors, 16.06 GB in bf16, 4 shards.
* ``moe``: Qwen3-30B-A3B (hidden 2048, 48 layers, 32/4 heads of 128, 128 experts of 768, vocab 151936):
  18,867 tensors, 61.1 GB in bf16, 16 shards.

Scaling: every tensor keeps its name, dtype and trailing dimensions; its first dimension is multiplied
by ``scale`` (at least 1 row), so bytes shrink by about ``scale`` while the tensor count (what per-tensor
costs scale with) stays real. The scale is chosen from a byte budget and reported.

Contents: each tensor is a window of one random buffer starting at an offset of its own (its number
times a prime, modulo another), so a byte landing in the wrong tensor or at the wrong offset is caught
by the comparison, and writing costs no arithmetic per byte.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["SHAPES", "Shape", "generate", "real_bytes", "tensor_list"]


@dataclass(frozen=True)
class Shape:
    key: str
    model: str
    shards: int


SHAPES = {
    "dense": Shape("dense", "Llama-3-8B", 4),
    "moe": Shape("moe", "Qwen3-30B-A3B", 16),
}


def _llama3_8b(layers: int = 32) -> Iterator[tuple[str, tuple[int, ...]]]:
    h, inter, kv, vocab = 4096, 14336, 1024, 128256
    yield "model.embed_tokens.weight", (vocab, h)
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "self_attn.q_proj.weight", (h, h)
        yield p + "self_attn.k_proj.weight", (kv, h)
        yield p + "self_attn.v_proj.weight", (kv, h)
        yield p + "self_attn.o_proj.weight", (h, h)
        yield p + "mlp.gate_proj.weight", (inter, h)
        yield p + "mlp.up_proj.weight", (inter, h)
        yield p + "mlp.down_proj.weight", (h, inter)
        yield p + "input_layernorm.weight", (h,)
        yield p + "post_attention_layernorm.weight", (h,)
    yield "model.norm.weight", (h,)
    yield "lm_head.weight", (vocab, h)


def _qwen3_30b_a3b(layers: int = 48) -> Iterator[tuple[str, tuple[int, ...]]]:
    h, q, kv, hd, moe, experts, vocab = 2048, 4096, 512, 128, 768, 128, 151936
    yield "model.embed_tokens.weight", (vocab, h)
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "self_attn.q_proj.weight", (q, h)
        yield p + "self_attn.k_proj.weight", (kv, h)
        yield p + "self_attn.v_proj.weight", (kv, h)
        yield p + "self_attn.o_proj.weight", (h, q)
        yield p + "self_attn.q_norm.weight", (hd,)
        yield p + "self_attn.k_norm.weight", (hd,)
        yield p + "input_layernorm.weight", (h,)
        yield p + "post_attention_layernorm.weight", (h,)
        yield p + "mlp.gate.weight", (experts, h)
        for e in range(experts):
            yield p + f"mlp.experts.{e}.gate_proj.weight", (moe, h)
            yield p + f"mlp.experts.{e}.up_proj.weight", (moe, h)
            yield p + f"mlp.experts.{e}.down_proj.weight", (h, moe)
    yield "model.norm.weight", (h,)
    yield "lm_head.weight", (vocab, h)


def tensor_list(shape: str, layers: int | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """The real tensor list, or its first ``layers`` layers (``--quick``: CI cannot afford 18,867)."""
    make = {"dense": _llama3_8b, "moe": _qwen3_30b_a3b}[shape]
    return list(make() if layers is None else make(layers))


def real_bytes(shape: str, elem: int = 2) -> int:
    return sum(math.prod(s) for _, s in tensor_list(shape)) * elem


def scaled(dims: tuple[int, ...], scale: float) -> tuple[int, ...]:
    return (max(1, round(dims[0] * scale)), *dims[1:])


_WINDOWS = 65521  # a prime: tensor k starts at byte 2 * ((k * 4099) % _WINDOWS) of the random buffer


def _base(nbytes: int, seed: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (nbytes + 2 * _WINDOWS,), dtype=torch.uint8, generator=g)


def generate(folder: str, shape: str, budget_bytes: int, layers: int | None = None) -> dict[str, Any]:
    """Write the scaled checkpoint (bf16, sharded, with an index); returns facts about it. ``layers``:
    only the first layers (tensor count reduced, and reported)."""
    import torch

    from ..loading.writer import write_index, write_safetensors

    spec = SHAPES[shape]
    tensors = tensor_list(shape, layers)
    real = real_bytes(shape)
    scale = min(1.0, budget_bytes / real)
    os.makedirs(folder, exist_ok=True)
    per = math.ceil(len(tensors) / spec.shards)
    base = _base(max(math.prod(scaled(d, scale)) for _, d in tensors) * 2, seed=len(tensors))
    weight_map: dict[str, str] = {}
    total = 0
    for s in range(spec.shards):
        fname = f"model-{s + 1:05d}-of-{spec.shards:05d}.safetensors"
        part = {}
        for k, (name, dims) in enumerate(tensors[s * per:(s + 1) * per], start=s * per):
            d = scaled(dims, scale)
            off = 2 * ((k * 4099) % _WINDOWS)  # even: a bf16 view needs 2-byte alignment
            part[name] = base[off:off + math.prod(d) * 2].view(torch.bfloat16).view(d)
            weight_map[name] = fname
        total += write_safetensors(os.path.join(folder, fname), part)
    write_index(folder, weight_map, total)
    return {"model": spec.model, "tensors": len(tensors), "real_tensors": len(tensor_list(shape)),
            "layers": layers or "all", "files": spec.shards, "bytes": total, "real_bytes_bf16": real,
            "scale": scale}
