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


# A decode loop reads back the same dtypes and shapes every step: plan each signature once.
_PLANS: dict[tuple[Any, ...], tuple[Layout, _Recipe]] = {}
_PLANS_MAX = 256
_PADS: dict[Any, torch.Tensor] = {}  # one never-read 16-byte pad per device, reused by every pack


def _planned(tensors: Sequence[torch.Tensor]) -> tuple[Layout, _Recipe]:
    """``plan(tensors)`` and its unpack recipe, cached by (dtype, shape) signature."""
    key = tuple([(t.dtype, t.shape) for t in tensors])
    hit = _PLANS.get(key)
    if hit is None:
        layout = plan(tensors)
        hit = (layout, _recipe(layout))
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()  # shapes that change every step: keep the cache bounded, not clever
        _PLANS[key] = hit
    return hit


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
            # contiguous() copies only a strided tensor; reshape(-1) would keep a 1-D one strided, and
            # a strided tensor cannot be viewed as bytes.
            flat = t.contiguous().view(-1)
            pieces.append(flat.view(torch.uint8) if seg.dtype != torch.uint8 else flat)
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
    layout = layout or _planned(tensors)[0]
    device = tensors[0].device
    backend = backend or backend_for(device)
    buf = backend.device_empty(layout.nbytes, tensors[0])
    pad = _PADS.get(device)
    if pad is None:  # padding bytes are never read, so one pad per device serves every pack
        pad = _PADS[device] = torch.empty(ALIGN, dtype=torch.uint8, device=device)

    def kernel() -> None:
        pieces = _byte_pieces(tensors, layout, pad)
        if pieces:
            torch.cat(pieces, out=buf)

    backend.launch(kernel)
    return buf, layout


@dataclass(frozen=True)
class _Recipe:
    """How to cut a host buffer into typed views: one dtype view per distinct dtype, then one
    ``as_strided`` per segment (half the torch calls of slice + view + reshape per segment)."""

    dtypes: tuple[Any, ...]
    #: per segment: (index into dtypes, element offset in that dtype, shape, contiguous strides)
    cuts: tuple[tuple[int, int, tuple[int, ...], tuple[int, ...]], ...]


def _recipe(layout: Layout) -> _Recipe:
    dtypes: list[Any] = []
    cuts = []
    for seg in layout.segments:
        if seg.dtype not in dtypes:
            dtypes.append(seg.dtype)
        itemsize = seg.dtype.itemsize
        strides: list[int] = []
        acc = 1
        for n in reversed(seg.shape):
            strides.append(acc)
            acc *= max(n, 1)
        cuts.append((dtypes.index(seg.dtype), seg.offset // itemsize, seg.shape, tuple(reversed(strides))))
    return _Recipe(tuple(dtypes), tuple(cuts))


def _unpack_slow(host: torch.Tensor, layout: Layout) -> list[torch.Tensor]:
    import torch

    out: list[torch.Tensor] = []
    for seg in layout.segments:
        raw = host[seg.offset: seg.offset + seg.nbytes]
        view = raw.view(seg.dtype) if seg.dtype != torch.uint8 else raw
        out.append(view.view(seg.shape))
    return out


def _unpack(host: torch.Tensor, layout: Layout, recipe: _Recipe) -> list[torch.Tensor]:
    try:
        bases = [host.view(dt) for dt in recipe.dtypes]
        starts = [b.storage_offset() for b in bases]
        return [bases[d].as_strided(shape, strides, starts[d] + off) for d, off, shape, strides in recipe.cuts]
    except RuntimeError:
        # A buffer whose size or offset does not divide by an element size (not one read_coalesced
        # allocates): cut it segment by segment instead.
        return _unpack_slow(host, layout)


def unpack(host: torch.Tensor, layout: Layout) -> list[torch.Tensor]:
    """Views of the host byte buffer, one per packed tensor (no copies)."""
    return _unpack(host, layout, _recipe(layout))


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
    # One pass (the worker pays every call on each step): which items cross, and which coalesce.
    tensor_type, strided = torch.Tensor, torch.strided
    is_dev = backend.is_device_tensor if backend is not None else None
    first_device = None
    group: list[int] = []
    alone: list[int] = []
    for i, t in enumerate(out):
        if not isinstance(t, tensor_type) or not (is_dev(t) if is_dev is not None else t.device.type != "cpu"):
            continue
        device = t.device
        if first_device is None:
            first_device = device
        if device == first_device and t.layout == strided and not t.is_quantized \
                and t.numel() * t.element_size() <= max_coalesce_bytes:
            group.append(i)
        else:
            alone.append(i)
    if first_device is None:
        return out
    backend = backend or backend_for(first_device)
    if len(group) == 1:
        alone, group = sorted(alone + group), []

    if group:
        srcs = [tensors[i] for i in group]
        layout, recipe = _planned(srcs)
        buf, layout = pack(srcs, backend, layout)
        host = torch.empty(layout.nbytes, dtype=torch.uint8, pin_memory=pin_memory)
        if layout.nbytes:
            backend.copy_to_host(host, buf, non_blocking=non_blocking)
        if non_blocking:
            _keep_alive_on_stream(srcs, backend)
        for i, view in zip(group, _unpack(host, layout, recipe), strict=True):
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
