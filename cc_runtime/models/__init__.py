"""Small built-in models for tests and benchmarks (random seeded weights, no downloads; imports torch)."""

from __future__ import annotations

from .tiny_llama import (
    AttentionBatch,
    KVCache,
    TinyLlama,
    TinyLlamaConfig,
    build_tiny_llama,
    dummy_batch,
    example_inputs,
    make_batch,
    tiny_attention,
)

__all__ = ["AttentionBatch", "KVCache", "TinyLlama", "TinyLlamaConfig", "build_tiny_llama", "dummy_batch",
           "example_inputs", "make_batch", "tiny_attention"]
