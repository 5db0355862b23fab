"""The GPU's %globaltimer as a :class:`~cc_runtime.timer.events.Timer`.

Each ``record`` launches a one-thread stamp kernel that writes %globaltimer (ns) into its slot of a
preallocated int64 device buffer; ``elapsed_time`` reads all pending slots back in one copy. Unlike
CUDA event timings, these readings stay correct under CC (FlashInfer PR 3870, TensorRT-LLM PR 11657).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .events import StampArena, cuda_l2_flusher

log = logging.getLogger("cc_runtime.timer")

GRANULARITY_READS = 20_000  # ~ a few hundred us of reading the register: sees many updates


class GlobalTimer(StampArena):
    name = "globaltimer"
    subtract_overhead = True

    def __init__(self, device_index: int, kernels: Any, capacity: int = 32768, *,
                 buffer_device: str | None = None) -> None:
        """``buffer_device`` only for CPU tests of this glue (the stamp buffer then lives on the host)."""
        import torch

        super().__init__(capacity)
        self.device_index = device_index
        self.device = f"cuda:{device_index}"
        self.kernels = kernels
        self.backend = getattr(kernels, "backend", type(kernels).__name__)
        self._torch = torch
        self._buf_device = buffer_device or self.device
        self._buf = torch.zeros(capacity, dtype=torch.int64, device=self._buf_device)
        self._flusher: Callable[[], None] | None = None

    def _stream(self, stream: Any) -> Any:
        torch = self._torch
        if stream is None:
            return torch.cuda.current_stream(self.device_index)
        if isinstance(stream, int):  # a raw handle, as some callers pass
            return torch.cuda.ExternalStream(stream, device=self.device)
        return stream

    def _write(self, slot: int, stream: Any) -> None:
        target = self._stream(stream)
        if self._capturing(target, explicit=stream is not None):
            raise RuntimeError("cc_runtime globaltimer events cannot be recorded inside a CUDA graph capture; "
                               "record them around graph.replay()")
        self.kernels.stamp(self._buf, slot, target)

    def _capturing(self, stream: Any, explicit: bool) -> bool:
        """Whether ``stream``, the one the stamp is launched on, is being captured.

        torch only asks about the current stream, so an explicit stream is made current for the
        question: a side stream under capture while the current one is not must refuse the stamp,
        and a capture on the current stream must not refuse a stamp on another stream.
        """
        torch = self._torch
        # The stream the caller passed is usually the current one: ask directly (a stream context on
        # every stamp would add microseconds of host time between a kernel and its end stamp).
        if not explicit or stream == torch.cuda.current_stream(self.device_index):
            return bool(torch.cuda.is_current_stream_capturing())
        with torch.cuda.stream(stream):
            return bool(torch.cuda.is_current_stream_capturing())

    def _read(self, lo: int, hi: int) -> list[int]:
        self._torch.cuda.synchronize(self.device_index)
        return [int(v) for v in self._buf[lo:hi].tolist()]

    def synchronize(self) -> None:
        self._torch.cuda.synchronize(self.device_index)

    def l2_flusher(self) -> Callable[[], None]:
        if self._flusher is None:
            self._flusher = cuda_l2_flusher(self.device_index)
        return self._flusher

    def spin(self, amount: int) -> None:
        self.kernels.spin(int(amount), self._stream(None))

    def measure_granularity_ns(self) -> float | None:
        """Smallest non-zero step of %globaltimer seen by a kernel reading it in a loop."""
        torch = self._torch
        out = torch.zeros(1, dtype=torch.int64, device=self._buf_device)
        self.kernels.granularity(out, GRANULARITY_READS, self._stream(None))
        torch.cuda.synchronize(self.device_index)
        value = int(out.item())
        if value <= 0 or value >= 2**62:
            return None
        return float(value)

    def stamp_tensor(self, out: Any, stream: Any = None) -> None:
        """Write %globaltimer into ``out[0]`` (an int64 CUDA tensor): FlashInfer's stamp-kernel contract."""
        self.kernels.stamp(out, 0, self._stream(stream))
