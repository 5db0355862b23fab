"""Token-count buckets: which sizes get a graph, and which graph a batch of n tokens replays.

The default sizes follow vLLM: ``[1, 2, 4] + range(8, 256, 8) + range(256, max + 1, 16)``; dense at
small sizes, where padding waste is relatively largest, and every 16 above. A batch is padded up to the
nearest captured size; above the largest size it runs eagerly (no padding at all).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

DEFAULT_MAX_TOKENS = 512


def default_capture_sizes(max_tokens: int = DEFAULT_MAX_TOKENS) -> list[int]:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    sizes = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, max_tokens + 1, 16))
    sizes = [s for s in sizes if s <= max_tokens]
    if sizes[-1] != max_tokens:
        sizes.append(max_tokens)  # the maximum itself is always captured: "eager above max" is exact
    return sizes


def normalize_sizes(sizes: Iterable[int]) -> list[int]:
    """Sorted, de-duplicated, all positive; raises ValueError naming the bad value."""
    out = sorted(set(int(s) for s in sizes))
    if not out:
        raise ValueError("capture sizes must not be empty")
    if out[0] < 1:
        raise ValueError(f"capture sizes must be >= 1, got {out[0]}")
    return out


class Buckets:
    """Ascending capture sizes with O(log n) lookup of the bucket for a token count."""

    def __init__(self, sizes: Iterable[int]) -> None:
        self.sizes = normalize_sizes(sizes)

    @property
    def max(self) -> int:
        return self.sizes[-1]

    def bucket_for(self, num_tokens: int) -> int | None:
        """Smallest captured size >= num_tokens, or None (run eagerly) above the maximum or for 0."""
        if num_tokens < 1 or num_tokens > self.sizes[-1]:
            return None
        return self.sizes[bisect.bisect_left(self.sizes, num_tokens)]

    def capture_order(self) -> list[int]:
        """Largest first: its buffers are the ones every smaller size slices, and the shared pool
        grows to its peak once instead of fragmenting."""
        return list(reversed(self.sizes))

    def __len__(self) -> int:
        return len(self.sizes)

    def __repr__(self) -> str:
        return f"Buckets({len(self.sizes)} sizes, max={self.max})"
