"""How chunk bytes reach the device: CUDA, the emulator's simulated device, or plain CPU tensors.

A transport offers exactly what the loader needs, on two private streams: host chunks (pinned),
device chunks, ``h2d`` (one crossing per chunk, on the H2D stream, after the event that freed the
device chunk), owned device tensors and ``d2d`` copies into them (on the D2D stream, after the H2D's
event), events, and ``hand_over`` (the caller's stream waits for the D2D; CUDA's caching allocator is
told the tensor is used there). Each transport also counts its own crossings (``stats``); under the
GPU emulator or on the simulated device the emulator counts them as well, independently.

Pinned host memory comes from ``torch.empty(pin_memory=True)``, which is ``cudaHostAlloc`` (allowed
under CC), never ``cudaHostRegister`` (refused with error 801 under CC). Where pinning fails the chunk
is pageable and one log line says so.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

log = logging.getLogger("cc_runtime.loading")

__all__ = ["CpuTransport", "CudaTransport", "SimTransport", "torch_dtype", "transport_for"]

_warned: set[str] = set()


def _log_once(key: str, msg: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(msg, *args)


def torch_dtype(name: str) -> Any:
    """The torch dtype of a safetensors dtype name; None where this torch lacks it."""
    import torch

    attr = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
            "F8_E8M0": "float8_e8m0fnu", "I16": "int16", "U16": "uint16", "F16": "float16",
            "BF16": "bfloat16", "I32": "int32", "U32": "uint32", "F32": "float32", "I64": "int64",
            "U64": "uint64", "F64": "float64"}.get(name)
    return getattr(torch, attr, None) if attr else None


class _Counting:
    name = "base"
    simulated = False

    def __init__(self) -> None:
        self.stats: collections.Counter[str] = collections.Counter()
        self._stats_lock = threading.Lock()

    def _count(self, key: str, nbytes: int) -> None:
        with self._stats_lock:
            self.stats[key] += 1
            self.stats[f"bytes_{key}"] += nbytes

    def close(self) -> None:
        """Nothing to release by default (streams and buffers go with their last reference)."""


class CudaTransport(_Counting):
    name = "cuda"

    def __init__(self, device: Any = None) -> None:
        import torch

        super().__init__()
        self.torch = torch
        dev = torch.device(device if device is not None else "cuda")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self.device = dev
        self.h2d_stream = torch.cuda.Stream(dev)
        self.d2d_stream = torch.cuda.Stream(dev)

    def host_chunk(self, nbytes: int) -> tuple[Any, bool]:
        torch = self.torch
        try:
            return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True), True
        except RuntimeError as exc:
            _log_once("pageable", "cc_runtime.loading: pinned host memory unavailable (%s); chunks are pageable, "
                      "which costs a staging copy per chunk", exc)
            return torch.empty(nbytes, dtype=torch.uint8), False

    def device_chunk(self, nbytes: int) -> Any:
        return self.torch.empty(nbytes, dtype=self.torch.uint8, device=self.device)

    def h2d(self, dst: Any, src: Any, after: Any = None) -> Any:
        torch = self.torch
        with torch.cuda.stream(self.h2d_stream):
            if after is not None:
                self.h2d_stream.wait_event(after)
            dst.copy_(src, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record(self.h2d_stream)
        self._count("h2d", int(src.numel()))
        return ev

    def d2d_after(self, event: Any) -> None:
        self.d2d_stream.wait_event(event)

    def empty(self, nbytes: int) -> Any:
        torch = self.torch
        with torch.cuda.stream(self.d2d_stream):
            return torch.empty(nbytes, dtype=torch.uint8, device=self.device)

    def d2d(self, dst: Any, src: Any) -> None:
        with self.torch.cuda.stream(self.d2d_stream):
            dst.copy_(src, non_blocking=True)
        self._count("d2d", int(src.numel()))

    def record(self) -> Any:
        ev = self.torch.cuda.Event()
        ev.record(self.d2d_stream)
        return ev

    def host_wait(self, event: Any) -> None:
        event.synchronize()

    def finish(self, tensor: Any) -> Any:
        return tensor

    def hand_over(self, tensor: Any, event: Any) -> None:
        cur = self.torch.cuda.current_stream(self.device)
        cur.wait_event(event)
        # Allocated on the D2D stream: keep the block from being reused there before the caller's
        # stream has finished with it.
        tensor.record_stream(cur)


class SimTransport(_Counting):
    """The emulator's simulated device (CPU threads): every copy is charged and counted by it."""

    name = "simulated"
    simulated = True

    def __init__(self, sim: Any) -> None:
        super().__init__()
        import torch

        self.torch = torch
        self.sim = sim
        self.h2d_stream = sim.Stream(name="loader-h2d")
        self.d2d_stream = sim.Stream(name="loader-d2d")

    def host_chunk(self, nbytes: int) -> tuple[Any, bool]:
        return self.torch.empty(nbytes, dtype=self.torch.uint8), True  # pinned unless marked pageable

    def device_chunk(self, nbytes: int) -> Any:
        return self.sim.empty(nbytes, dtype=self.torch.uint8)

    def h2d(self, dst: Any, src: Any, after: Any = None) -> Any:
        if after is not None and not after.query():
            self.h2d_stream.wait_event(after)
        self.sim.copy_(self.sim.mark_device(dst), src, stream=self.h2d_stream, non_blocking=True)
        self._count("h2d", int(src.numel()))
        return self.h2d_stream.record_event()

    def d2d_after(self, event: Any) -> None:
        if not event.query():  # under CC the H2D blocked its thread: usually done already
            self.d2d_stream.wait_event(event)

    def empty(self, nbytes: int) -> Any:
        return self.sim.empty(nbytes, dtype=self.torch.uint8)

    def d2d(self, dst: Any, src: Any) -> None:
        mark = self.sim.mark_device
        self.sim.copy_(mark(dst), mark(src), stream=self.d2d_stream, non_blocking=True, inline_if_idle=True)
        self._count("d2d", int(src.numel()))

    def record(self) -> Any:
        return self.d2d_stream.record_event()

    def host_wait(self, event: Any) -> None:
        event.synchronize()

    def finish(self, tensor: Any) -> Any:
        return self.sim.mark_device(tensor)  # a view is a new object: register it as device memory

    def hand_over(self, tensor: Any, event: Any) -> None:
        # The simulated device's tensors are CPU memory that any torch op may read at once (SGLang's
        # weight loaders do): wait for the chunk's D2D copies here, once per chunk.
        if not event.query():
            event.synchronize()

    def close(self) -> None:
        for s in (self.h2d_stream, self.d2d_stream):
            s.synchronize()


class CpuTransport(_Counting):
    """Plain CPU tensors as the "device": the same chunked path, for CPU-only use and tests."""

    name = "cpu"

    def __init__(self) -> None:
        super().__init__()
        import torch

        self.torch = torch

    def host_chunk(self, nbytes: int) -> tuple[Any, bool]:
        return self.torch.empty(nbytes, dtype=self.torch.uint8), False

    def device_chunk(self, nbytes: int) -> Any:
        return self.torch.empty(nbytes, dtype=self.torch.uint8)

    def h2d(self, dst: Any, src: Any, after: Any = None) -> Any:
        dst.copy_(src)
        self._count("h2d", int(src.numel()))
        return None

    def d2d_after(self, event: Any) -> None:
        pass

    def empty(self, nbytes: int) -> Any:
        return self.torch.empty(nbytes, dtype=self.torch.uint8)

    def d2d(self, dst: Any, src: Any) -> None:
        dst.copy_(src)
        self._count("d2d", int(src.numel()))

    def record(self) -> Any:
        return None

    def host_wait(self, event: Any) -> None:
        pass

    def finish(self, tensor: Any) -> Any:
        return tensor

    def hand_over(self, tensor: Any, event: Any) -> None:
        pass


def transport_for(device: Any = None) -> Any:
    """A transport for ``device``: a transport object as is, a SimDevice, ``"cpu"``, or a CUDA device
    (None: CUDA when available, else CPU)."""
    if device is not None and hasattr(device, "h2d") and hasattr(device, "d2d"):
        return device
    if device is not None and getattr(device, "simulated", False) and hasattr(device, "copy_"):
        return SimTransport(device)
    import torch

    if device is None:
        return CudaTransport() if torch.cuda.is_available() else CpuTransport()
    dev = torch.device(device)
    if dev.type == "cuda":
        return CudaTransport(dev)
    if dev.type == "cpu":
        return CpuTransport()
    raise ValueError(f"cc_runtime.loading: no transport for device {device!r} (cuda, cpu or a SimDevice)")
