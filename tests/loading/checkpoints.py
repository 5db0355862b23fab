"""Small generated checkpoints: dense and MoE-shaped, several files, bf16 and FP8 with scales."""

from __future__ import annotations

import os
from typing import Any

import torch

from cc_runtime.loading.writer import write_index, write_safetensors


def _tensors(kind: str, g: torch.Generator) -> dict[str, torch.Tensor]:
    h, inter = 64, 160
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": torch.randn(96, h, generator=g).bfloat16()}
    for i in range(3):
        p = f"model.layers.{i}."
        out[p + "self_attn.qkv.weight"] = torch.randn(3 * h, h, generator=g).bfloat16()
        out[p + "input_layernorm.weight"] = torch.randn(h, generator=g).bfloat16()
        if kind == "dense":
            out[p + "mlp.gate_up_proj.weight"] = torch.randn(2 * inter, h, generator=g).bfloat16()
            out[p + "mlp.down_proj.weight"] = torch.randn(h, inter, generator=g).bfloat16()
            continue
        out[p + "mlp.gate.weight"] = torch.randn(8, h, generator=g).bfloat16()
        for e in range(8):
            for proj, shape in (("gate_proj", (32, h)), ("up_proj", (32, h)), ("down_proj", (h, 32))):
                w = torch.randn(*shape, generator=g)
                out[p + f"mlp.experts.{e}.{proj}.weight"] = w.to(torch.float8_e4m3fn)
                out[p + f"mlp.experts.{e}.{proj}.weight_scale_inv"] = torch.rand(1, generator=g) + 0.5
    out["model.norm.weight"] = torch.randn(h, generator=g).bfloat16()
    out["model.empty"] = torch.empty(0, h, dtype=torch.bfloat16)
    return out


def make_checkpoint(folder: str, kind: str = "dense", files: int = 3, seed: int = 0) -> dict[str, Any]:
    """Write a sharded checkpoint with an index; returns ``{name: tensor}`` as written."""
    g = torch.Generator().manual_seed(seed)
    tensors = _tensors(kind, g)
    names = list(tensors)
    per = -(-len(names) // files)
    weight_map = {}
    total = 0
    os.makedirs(folder, exist_ok=True)
    for f in range(files):
        fname = f"model-{f + 1:05d}-of-{files:05d}.safetensors"
        part = {n: tensors[n] for n in names[f * per:(f + 1) * per]}
        total += write_safetensors(os.path.join(folder, fname), part)
        weight_map.update({n: fname for n in part})
    write_index(folder, weight_map, total)
    return tensors


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape)
            and torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)))
