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
from typing import TYPE_CHECKING, Any

from ..packing import ALIGN, Layout, Segment, plan, unpack
from ..packing import byte_pieces as _byte_pieces
from .backend import DeviceBackend, backend_for

if TYPE_CHECKING:
    import torch

__all__ = ["ALIGN", "DEFAULT_MAX_COALESCE_BYTES", "Layout", "Segment", "pack", "plan", "read_coalesced", "unpack"]

# ~20 us of fixed cost is worth ~60 KB at CC's ~3 GB/s; above 1 MiB a separate crossing costs <7% extra.
DEFAULT_MAX_COALESCE_BYTES = 1 << 20


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
