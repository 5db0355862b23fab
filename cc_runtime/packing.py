"""Byte layouts for packing many small tensors into one buffer, shared by readback (D2H) and staging (H2D).

Under CC every crossing pays a fixed cost (~20 us) before bandwidth counts, so both directions pack a
step's small tensors into one byte buffer and cross once. The layout is the same either way: segments
in input order, each starting at a multiple of ``ALIGN`` bytes (16: the largest torch element size, so
every view is naturally aligned; torch's allocators align the buffer itself to at least 64).

Nothing here touches a device: :func:`plan` computes offsets, :func:`byte_pieces` lists the uint8 views
(with padding) that one ``torch.cat(..., out=buf)`` writes, :func:`unpack` returns typed views of a
packed buffer, wherever it lives. Imports torch only inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ALIGN = 16


@dataclass(frozen=True)
class Segment:
    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Layout:
    segments: tuple[Segment, ...]
    nbytes: int


def _align(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def plan(tensors: Sequence[torch.Tensor], align: int = ALIGN) -> Layout:
    """Byte offsets for ``tensors`` packed in order, each segment aligned to ``align`` bytes."""
    if align < 1 or align & (align - 1):
        raise ValueError(f"align must be a power of two, got {align}")
    segs: list[Segment] = []
    offset = 0
    for t in tensors:
        if t.element_size() > align:
            raise ValueError(f"align={align} is smaller than the element size of {t.dtype}")
        offset = _align(offset, align)
        nbytes = t.numel() * t.element_size()
        segs.append(Segment(offset, nbytes, t.dtype, tuple(t.shape)))
        offset += nbytes
    return Layout(tuple(segs), _align(offset, align) if segs else 0)


def byte_pieces(tensors: Sequence[torch.Tensor], layout: Layout, pad: torch.Tensor) -> list[torch.Tensor]:
    """uint8 views of ``tensors`` and of ``pad`` (the gaps) whose concatenation is the packed buffer."""
    import torch

    pieces: list[torch.Tensor] = []
    cursor = 0
    for t, seg in zip(tensors, layout.segments, strict=True):
        if seg.offset > cursor:
            pieces.append(pad[: seg.offset - cursor])
        if seg.nbytes:
            # contiguous() copies only a strided tensor; reshape(-1) would keep a 1-D one strided, and
            # a strided tensor cannot be viewed as bytes.
            flat = t.contiguous().view(-1)
            pieces.append(flat.view(torch.uint8) if flat.dtype != torch.uint8 else flat)
        cursor = seg.offset + seg.nbytes
    if layout.nbytes > cursor:
        pieces.append(pad[: layout.nbytes - cursor])
    return pieces


def unpack(buf: torch.Tensor, layout: Layout) -> list[torch.Tensor]:
    """Typed views of the packed byte buffer ``buf``, one per packed tensor (no copies)."""
    import torch

    out: list[torch.Tensor] = []
    for seg in layout.segments:
        raw = buf[seg.offset: seg.offset + seg.nbytes]
        view = raw.view(seg.dtype) if seg.dtype != torch.uint8 else raw
        out.append(view.view(seg.shape))
    return out
