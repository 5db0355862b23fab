"""The few device operations a readback (D2H) or a staged input copy (H2D) needs, behind one small protocol.

The worker and the coalescer call only these, so they never branch on the kind of device: a real GPU
(``torch.cuda`` or any module shaped like it, e.g. ``torch.get_device_module(device)``), or the
emulator's simulated device on CPU-only machines. Streams and events are whatever the device hands
out; the protocol only needs ``Event.record()`` (on the current stream), ``Event.synchronize()`` and
``Event.query()``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

log = logging.getLogger("cc_runtime.readback")


@runtime_checkable
class DeviceBackend(Protocol):
    """What the readback worker and the coalescer need from a device."""

    name: str

    def current_device(self) -> Any: ...

    def set_device(self, device: Any) -> None: ...

    def new_stream(self) -> Any: ...

    def current_stream(self) -> Any: ...

    def stream(self, stream: Any) -> contextlib.AbstractContextManager[Any]: ...

    def new_event(self) -> Any: ...

    def synchronize_stream(self, stream: Any) -> None: ...

    def launch(self, fn: Callable[[], Any], cost_s: float = 0.0) -> None:
        """Run device work ``fn`` in order on the current stream (a kernel on a GPU)."""
        ...

    def copy_to_host(self, dst: torch.Tensor, src: torch.Tensor, *, non_blocking: bool = False) -> None:
        """One device->host crossing on the current stream."""
        ...

    def is_device_tensor(self, t: torch.Tensor) -> bool:
        """True when ``t`` lives on this device (so reading it costs a crossing)."""
        ...

    def device_empty(self, nbytes: int, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised uint8 buffer on the device that holds ``like``."""
        ...

    @property
    def transfers(self) -> int:
        """Device->host crossings issued through this backend so far (for benchmarks and tests)."""
        ...

    # -- host->device (used by cc_runtime.staging) --------------------------------------------
    def copy_to_device(self, dst: torch.Tensor, src: torch.Tensor, *, non_blocking: bool = False) -> None:
        """One host->device crossing on the current stream."""
        ...

    def copy_on_device(self, dst: torch.Tensor, src: torch.Tensor) -> bool:
        """A device->device copy on the current stream (no crossing); True if it already completed."""
        ...

    def wait_event(self, event: Any) -> None:
        """Make the current stream wait for ``event`` (device-side; the host does not block)."""
        ...

    def is_capturing(self) -> bool:
        """True while the current stream is capturing a graph (no host copies allowed then)."""
        ...

    def device_bytes(self, nbytes: int) -> torch.Tensor:
        """An uninitialised uint8 buffer of ``nbytes`` on this device."""
        ...

    @property
    def h2d_transfers(self) -> int:
        """Host->device crossings issued through this backend so far."""
        ...


class _Counting:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # the worker and the caller may both copy
        self._issued = 0
        self._issued_h2d = 0

    def _count_transfer(self) -> None:
        with self._lock:
            self._issued += 1

    def _count_h2d(self) -> None:
        with self._lock:
            self._issued_h2d += 1

    @property
    def h2d_transfers(self) -> int:
        return self._issued_h2d

    @property
    def transfers(self) -> int:
        return self._issued


class DeviceModuleBackend(_Counting):
    """A torch device module: ``torch.cuda``, ``torch.get_device_module(dev)``, or a stand-in shaped like it."""

    def __init__(self, module: Any, name: str | None = None, index: int | None = None) -> None:
        super().__init__()
        self.module = module
        self.name: str = name or str(getattr(module, "__name__", type(module).__name__))
        #: The device asked for (``cuda:1``); None: whichever device is current.
        self.index = index

    def current_device(self) -> Any:
        return self.module.current_device() if self.index is None else self.index

    def set_device(self, device: Any) -> None:
        self.module.set_device(device)

    def new_stream(self) -> Any:
        # On the bound device, not the caller's current one: the worker synchronizes this stream.
        return self.module.Stream() if self.index is None else self.module.Stream(device=self.index)

    def current_stream(self) -> Any:
        return self.module.current_stream()

    def stream(self, stream: Any) -> contextlib.AbstractContextManager[Any]:
        return self.module.stream(stream)  # type: ignore[no-any-return]

    def new_event(self) -> Any:
        # blocking=True: a thread that synchronizes on it sleeps in the driver (cudaEventBlockingSync)
        # instead of spinning a CPU core for a whole forward pass, as a default event would.
        try:
            return self.module.Event(blocking=True)
        except TypeError:  # a device module whose Event takes no ``blocking`` (a stand-in)
            return self.module.Event()

    def synchronize_stream(self, stream: Any) -> None:
        # stream.synchronize() spins unless the context was made with cudaDeviceScheduleBlockingSync,
        # which torch never asks for: wait on a blocking event recorded on the stream instead.
        done = self.new_event()
        with self.module.stream(stream):
            done.record()
        done.synchronize()

    def launch(self, fn: Callable[[], Any], cost_s: float = 0.0) -> None:
        fn()  # torch ops enqueue themselves on the current stream

    def copy_to_host(self, dst: torch.Tensor, src: torch.Tensor, *, non_blocking: bool = False) -> None:
        self._count_transfer()
        dst.copy_(src, non_blocking=non_blocking)

    def is_device_tensor(self, t: torch.Tensor) -> bool:
        return t.device.type != "cpu"

    def device_empty(self, nbytes: int, like: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.empty(nbytes, dtype=torch.uint8, device=like.device)

    def copy_to_device(self, dst: torch.Tensor, src: torch.Tensor, *, non_blocking: bool = False) -> None:
        self._count_h2d()
        dst.copy_(src, non_blocking=non_blocking)

    def copy_on_device(self, dst: torch.Tensor, src: torch.Tensor) -> bool:
        dst.copy_(src, non_blocking=True)
        return False  # queued

    def wait_event(self, event: Any) -> None:
        event.wait(self.module.current_stream())

    def is_capturing(self) -> bool:
        probe = getattr(self.module, "is_current_stream_capturing", None)
        return bool(probe()) if probe is not None else False

    def device_bytes(self, nbytes: int) -> torch.Tensor:
        import torch

        kind = self.name.rsplit(".", 1)[-1]  # "torch.cuda" -> "cuda"
        return torch.empty(nbytes, dtype=torch.uint8, device=torch.device(kind, self.current_device()))


class SimDeviceBackend(_Counting):
    """The emulator's simulated device (``cc_runtime.emulator.simdevice.SimDevice``).

    Its tensors are ordinary CPU tensors registered as device-resident (``sim.is_device``) whose
    contents become valid when the simulated stream has run the work that writes them; so packing is
    launched as stream work into a buffer the device allocated.
    """

    def __init__(self, sim: Any) -> None:
        super().__init__()
        self.sim = sim
        self.name = f"simulated:{getattr(sim, 'name', 'device')}"

    def current_device(self) -> Any:
        return getattr(self.sim, "name", "sim")

    def set_device(self, device: Any) -> None:
        pass  # one simulated device per SimDevice object: nothing to select

    def new_stream(self) -> Any:
        return self.sim.Stream()

    def current_stream(self) -> Any:
        return self.sim.current_stream()

    def stream(self, stream: Any) -> contextlib.AbstractContextManager[Any]:
        return self.sim.stream(stream)  # type: ignore[no-any-return]

    def new_event(self) -> Any:
        return self.sim.Event()

    def synchronize_stream(self, stream: Any) -> None:
        stream.synchronize()

    def launch(self, fn: Callable[[], Any], cost_s: float = 0.0) -> None:
        # The pack is waited for by the copy right after it: on the worker's idle private stream it
        # runs on the worker, in stream order, instead of costing a hand-off to the stream thread
        # that a GPU would not (SimDevice.launch, ``inline_if_idle``).
        self.sim.launch(fn, cost_s, label="readback pack", inline_if_idle=True)

    def copy_to_host(self, dst: torch.Tensor, src: torch.Tensor, *, non_blocking: bool = False) -> None:
        self._count_transfer()
        self.sim.copy_(dst, src, non_blocking=non_blocking)

    def is_device_tensor(self, t: torch.Tensor) -> bool:
        return bool(self.sim.is_device(t))

    def device_empty(self, nbytes: int, like: torch.Tensor) -> torch.Tensor:
        import torch

        return self.sim.empty(nbytes, dtype=torch.uint8)  # type: ignore[no-any-return]

    def copy_to_device(self, dst: torch.Tensor, src: torch.Tensor, *, non_blocking: bool = False) -> None:
        self._count_h2d()
        self.sim.copy_(dst, src, non_blocking=non_blocking)

    def copy_on_device(self, dst: torch.Tensor, src: torch.Tensor) -> bool:
        # Plain torch ops on simulated device memory run at once on the host, not in stream order; a
        # copy onto an idle stream therefore completes before returning, so such reads see it (the cost
        # is the same D2D); behind queued work it is queued, as on a GPU.
        idle = bool(self.sim.current_stream().query())
        self.sim.copy_(dst, src, non_blocking=not idle)
        return idle

    def wait_event(self, event: Any) -> None:
        if not event.query():  # a completed event orders nothing; queuing a wait would only delay
            self.sim.current_stream().wait_event(event)

    def is_capturing(self) -> bool:
        return bool(self.sim.is_current_stream_capturing())

    def device_bytes(self, nbytes: int) -> torch.Tensor:
        import torch

        return self.sim.empty(nbytes, dtype=torch.uint8)  # type: ignore[no-any-return]


def _is_simdevice(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("launch", "copy_", "Stream", "Event", "current_stream"))


def backend_for(device: Any = None) -> DeviceBackend:
    """The backend for ``device``: a SimDevice, a torch device module, a torch.device/str, or None (CUDA).

    Raises ValueError with a clear message when nothing usable is given (e.g. no GPU and no SimDevice).
    """
    if isinstance(device, DeviceBackend):  # ours, or any object implementing the protocol
        return device
    if device is not None and _is_simdevice(device):
        return SimDeviceBackend(device)
    if device is not None and hasattr(device, "Stream") and hasattr(device, "Event"):
        return DeviceModuleBackend(device)
    import torch

    dev = torch.device(device) if device is not None else torch.device("cuda")
    if dev.type == "cpu":
        raise ValueError("a readback backend needs an accelerator or a SimDevice, not the CPU itself")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA is not available here; pass a SimDevice (cc_runtime.emulator) instead")
    return DeviceModuleBackend(torch.get_device_module(dev), name=dev.type, index=dev.index)
