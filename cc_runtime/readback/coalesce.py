"""One crossing per step: pack a step's outputs on the device, copy once, unpack on the host as views.

Under CC every device->host copy pays ~20 us fixed (encryption set-up, bounce buffer) before bandwidth
counts, and SGLang reads back several small tensors per step (token ids, logprobs, top-k values and
indices, accept lengths). Packing them into one byte buffer with a single device kernel (``torch.cat``
of byte views) and crossing once replaces N fixed costs by one.

Layout: segments in input order, each starting at a multiple of ``ALIGN`` bytes (16: the largest torch
element size, so every host view is naturally aligned; the host buffer itself comes from torch's
allocator, which aligns to 64). Tensors larger than ``max_coalesce_bytes`` cross on their own: packing
them would cost a device copy and extra memory to save one fixed cost that is small next to their
bandwidth time. Host tensors pass through untouched. The layout code is shared with H2D staging
(``cc_runtime.packing``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..packing import ALIGN, Layout, Segment, plan, unpack
from ..packing import byte_pieces as _byte_pieces
from .backend import DeviceBackend, backend_for

if TYPE_CHECKING:
    import torch

__all__ = ["ALIGN", "DEFAULT_MAX_COALESCE_BYTES", "Layout", "Segment", "pack", "plan", "read_coalesced", "unpack"]

# ~20 us of fixed cost is worth ~60 KB at CC's ~3 GB/s; above 1 MiB a separate crossing costs <7% extra.
DEFAULT_MAX_COALESCE_BYTES = 1 << 20


# -- per-step costs on the readback worker -----------------------------------------------------------
# The worker runs this code once per decode step, after sleeping through the step, so every call runs
# with cold caches (several times its back-to-back cost): plan each (dtype, shape) signature once and
# cut the host buffer with as few torch calls as possible.
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
        strides: list[int] = []
        acc = 1
        for n in reversed(seg.shape):
            strides.append(acc)
            acc *= max(n, 1)
        cuts.append((dtypes.index(seg.dtype), seg.offset // seg.dtype.itemsize, seg.shape, tuple(reversed(strides))))
    return _Recipe(tuple(dtypes), tuple(cuts))


_PLANS: dict[tuple[Any, ...], tuple[Layout, _Recipe]] = {}
_PLANS_MAX = 256
_PADS: dict[Any, torch.Tensor] = {}  # one never-read 16-byte pad per device, reused by every pack


def _planned(key: tuple[Any, ...], tensors: Sequence[torch.Tensor]) -> tuple[Layout, _Recipe]:
    """``plan(tensors)`` and its unpack recipe, cached by ``key``: the tensors' (dtype, shape) pairs."""
    hit = _PLANS.get(key)
    if hit is None:
        layout = plan(tensors)
        hit = (layout, _recipe(layout))
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()  # shapes that change every step: keep the cache bounded, not clever
        _PLANS[key] = hit
    return hit


def _unpack(host: torch.Tensor, layout: Layout, recipe: _Recipe) -> list[torch.Tensor]:
    """:func:`cc_runtime.packing.unpack` with the recipe's fewer calls; the same views."""
    try:
        bases = [host.view(dt) for dt in recipe.dtypes]
        starts = [b.storage_offset() for b in bases]
        return [bases[d].as_strided(shape, strides, starts[d] + off) for d, off, shape, strides in recipe.cuts]
    except RuntimeError:
        # A buffer whose size or offset does not divide by an element size (not one read_coalesced
        # allocates): cut it segment by segment instead.
        return unpack(host, layout)


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
    pad = _PADS.get(device)
    if pad is None:  # padding bytes are never read, so one pad per device serves every pack
        pad = _PADS[device] = torch.empty(ALIGN, dtype=torch.uint8, device=device)

    def kernel() -> None:
        pieces = _byte_pieces(tensors, layout, pad)
        if pieces:
            torch.cat(pieces, out=buf)

    backend.launch(kernel)
    return buf, layout


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
    key: list[Any] = []
    for i, t in enumerate(out):
        if not isinstance(t, tensor_type) or not (is_dev(t) if is_dev is not None else t.device.type != "cpu"):
            continue
        device = t.device
        if first_device is None:
            first_device = device
        if device == first_device and t.layout == strided and not t.is_quantized \
                and t.numel() * t.element_size() <= max_coalesce_bytes:
            group.append(i)
            key.append((t.dtype, t.shape))
        else:
            alone.append(i)
    if first_device is None:
        return out
    backend = backend or backend_for(first_device)
    if len(group) == 1:
        alone, group = sorted(alone + group), []

    if group:
        srcs = [tensors[i] for i in group]
        layout, recipe = _planned(tuple(key), srcs)
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
