"""One crossing per step: pack a step's outputs on the device, copy once, unpack on the host as views.

Under CC every device->host copy pays ~20 us fixed (encryption set-up, bounce buffer) before bandwidth
counts, and SGLang reads back several small tensors per step (token ids, logprobs, top-k values and
indices, accept lengths). Packing them into one byte buffer with a single device kernel (``torch.cat``
of byte views) and crossing once replaces N fixed costs by one.

Layout: segments in input order, each starting at a multiple of ``ALIGN`` bytes (16: the largest torch
element size, so every host view is naturally aligned; the host buffer itself comes from torch's
allocator, which aligns to 64). Tensors larger than ``max_coalesce_bytes`` cross on their own: packing
them would cost a device copy and extra memory to save one fixed cost that is small next to their
bandwidth time. Host tensors pass through untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .backend import DeviceBackend, backend_for

if TYPE_CHECKING:
    import torch

ALIGN = 16
# ~20 us of fixed cost is worth ~60 KB at CC's ~3 GB/s; above 1 MiB a separate crossing costs <7% extra.
DEFAULT_MAX_COALESCE_BYTES = 1 << 20


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


def _byte_pieces(tensors: Sequence[torch.Tensor], layout: Layout, pad: torch.Tensor) -> list[torch.Tensor]:
    import torch

    pieces: list[torch.Tensor] = []
    cursor = 0
    for t, seg in zip(tensors, layout.segments, strict=True):
        if seg.offset > cursor:
            pieces.append(pad[: seg.offset - cursor])
        if seg.nbytes:
            flat = t.reshape(-1)  # a copy only when t is not contiguous
            pieces.append(flat.view(torch.uint8) if flat.dtype != torch.uint8 else flat)
        cursor = seg.offset + seg.nbytes
    if layout.nbytes > cursor:
        pieces.append(pad[: layout.nbytes - cursor])
    return pieces


def pack(tensors: Sequence[torch.Tensor], backend: DeviceBackend | None = None,
         layout: Layout | None = None) -> tuple[torch.Tensor, Layout]:
    """Pack same-device ``tensors`` into one uint8 device buffer with one kernel on the current stream."""
    import torch

    if not tensors:
        raise ValueError("nothing to pack")
    layout = layout or plan(tensors)
    device = tensors[0].device
    backend = backend or backend_for(device)
    buf = backend.device_empty(layout.nbytes, tensors[0])
    pad = torch.empty(ALIGN, dtype=torch.uint8, device=device)  # padding bytes are never read

    def kernel() -> None:
        pieces = _byte_pieces(tensors, layout, pad)
        if pieces:
            torch.cat(pieces, out=buf)

    backend.launch(kernel)
    return buf, layout


def unpack(host: torch.Tensor, layout: Layout) -> list[torch.Tensor]:
    """Views of the host byte buffer, one per packed tensor (no copies)."""
    import torch

    out: list[torch.Tensor] = []
    for seg in layout.segments:
        raw = host[seg.offset: seg.offset + seg.nbytes]
        view = raw.view(seg.dtype) if seg.dtype != torch.uint8 else raw
        out.append(view.view(seg.shape))
    return out


def _coalescable(t: torch.Tensor, max_bytes: int) -> bool:
    import torch

    return t.layout == torch.strided and not t.is_quantized and t.numel() * t.element_size() <= max_bytes


def _keep_alive_on_stream(tensors: Sequence[torch.Tensor], backend: DeviceBackend) -> None:
    # The caller may drop its device references as soon as we return; tell the caching allocator the
    # current stream still reads them (what SGLang's own async_d2h does).
    stream = None
    for t in tensors:
        if t.device.type == "cuda":
            stream = stream or backend.current_stream()
            try:
                t.record_stream(stream)
            except Exception:  # noqa: BLE001,S110 - a stand-in stream is not a CUDA stream
                return


def read_coalesced(
    tensors: Sequence[Any],
    *,
    backend: DeviceBackend | None = None,
    non_blocking: bool = False,
    pin_memory: bool = False,
    max_coalesce_bytes: int = DEFAULT_MAX_COALESCE_BYTES,
) -> list[Any]:
    """Host copies of ``tensors`` (same order), with one crossing for all the small device tensors.

    Items that are not tensors, and tensors already on the host, come back as they are. With
    ``non_blocking`` the copy is only enqueued on the current stream: the host data is valid once an
    event recorded after this call has completed (or once the readback worker signals it).
    """
    import torch

    out: list[Any] = list(tensors)
    device_idx = [i for i, t in enumerate(tensors) if isinstance(t, torch.Tensor)
                  and (backend.is_device_tensor(t) if backend is not None else t.device.type != "cpu")]
    if not device_idx:
        return out
    first_device = tensors[device_idx[0]].device
    backend = backend or backend_for(first_device)
    group = [i for i in device_idx
             if tensors[i].device == first_device and _coalescable(tensors[i], max_coalesce_bytes)]
    grouped = set(group)
    alone = [i for i in device_idx if i not in grouped]
    if len(group) == 1:
        alone, group = sorted(alone + group), []

    if group:
        srcs = [tensors[i] for i in group]
        buf, layout = pack(srcs, backend)
        host = torch.empty(layout.nbytes, dtype=torch.uint8, pin_memory=pin_memory)
        if layout.nbytes:
            backend.copy_to_host(host, buf, non_blocking=non_blocking)
        if non_blocking:
            _keep_alive_on_stream(srcs, backend)
        for i, view in zip(group, unpack(host, layout), strict=True):
            out[i] = view
    for i in alone:
        src = tensors[i]
        host_t = torch.empty(src.shape, dtype=src.dtype, pin_memory=pin_memory)
        if src.numel():
            backend.copy_to_host(host_t, src, non_blocking=non_blocking)
        if non_blocking:
            _keep_alive_on_stream([src], backend)
        out[i] = host_t
    return out
