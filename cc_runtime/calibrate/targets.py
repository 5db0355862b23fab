"""The few operations calibrate needs from a device, on CUDA and on the simulated device.

Streams, events and ``stream(s)`` contexts already have one shape on both (the simulated device
mirrors ``torch.cuda``); what differs is how memory, copies, kernels and graphs are made, so only
that lives here. Nothing here reads the emulator's cost model: calibrate times what the device does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["CudaTarget", "SimTarget", "Target"]


class Target:
    """What calibrate needs from a device; CudaTarget and SimTarget implement it."""

    kind = "abstract"
    #: torch.cuda or a SimDevice: Stream(), Event(enable_timing=), stream(s), current_stream().
    api: Any

    def host(self, nbytes: int, pinned: bool) -> Any:
        """A host buffer of ``nbytes`` (uint8), page-locked or pageable."""
        raise NotImplementedError

    def device(self, nbytes: int) -> Any:
        raise NotImplementedError

    def copy(self, dst: Any, src: Any) -> None:
        """``dst.copy_(src, non_blocking=True)`` on the current stream."""
        raise NotImplementedError

    def busy(self, seconds: float) -> None:
        """Queue about ``seconds`` of device work on the current stream."""
        raise NotImplementedError

    def tiny_kernel(self) -> None:
        raise NotImplementedError

    def make_graph(self, nodes: int) -> Callable[[], None]:
        """A captured graph of ``nodes`` tiny kernels; returns its replay."""
        raise NotImplementedError

    def synchronize(self) -> None:
        raise NotImplementedError

    def host_register(self) -> dict[str, Any]:
        """Error codes of host registration through each entry point, and ``fails``."""
        raise NotImplementedError

    def multicast(self) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def on(self, stream: Any) -> Iterator[None]:
        with self.api.stream(stream):
            yield


class CudaTarget(Target):
    kind = "cuda"

    def __init__(self, index: int = 0) -> None:
        import torch

        self.torch = torch
        self.api = torch.cuda
        self.index = index
        torch.cuda.set_device(index)
        self.dev = torch.device("cuda", index)
        self._x = torch.zeros(16, device=self.dev)
        self._cycles_per_s = self._sleep_rate()

    def _sleep_rate(self) -> float:
        """GPU cycles per second of ``torch.cuda._sleep``, timed from the host (events may lie under CC)."""
        torch = self.torch
        torch.cuda._sleep(1_000_000)  # warm-up
        torch.cuda.synchronize()
        cycles = 50_000_000
        t0 = time.perf_counter()
        torch.cuda._sleep(cycles)
        torch.cuda.synchronize()
        return cycles / max(time.perf_counter() - t0, 1e-6)

    def host(self, nbytes: int, pinned: bool) -> Any:
        return self.torch.empty(nbytes, dtype=self.torch.uint8, pin_memory=pinned)

    def device(self, nbytes: int) -> Any:
        return self.torch.empty(nbytes, dtype=self.torch.uint8, device=self.dev)

    def copy(self, dst: Any, src: Any) -> None:
        dst.copy_(src, non_blocking=True)

    def busy(self, seconds: float) -> None:
        self.torch.cuda._sleep(int(seconds * self._cycles_per_s))

    def tiny_kernel(self) -> None:
        self._x.add_(1)

    def make_graph(self, nodes: int) -> Callable[[], None]:
        torch = self.torch
        x = torch.zeros(16, device=self.dev)
        side = torch.cuda.Stream(self.dev)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                x.add_(1)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(nodes):
                x.add_(1)
        return g.replay

    def synchronize(self) -> None:
        self.torch.cuda.synchronize()

    def host_register(self) -> dict[str, Any]:
        """cudaHostRegister through torch's cudart and, where installed, cuda-python's runtime binding."""
        out: dict[str, Any] = {}
        buf = self.torch.empty(1 << 20, dtype=self.torch.uint8)
        ptr, n = buf.data_ptr(), buf.numel()
        try:
            rt = self.torch.cuda.cudart()
            rc = int(rt.cudaHostRegister(ptr, n, 0))
            if rc == 0:
                rt.cudaHostUnregister(ptr)
            out["torch_cudart"] = rc
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            out["torch_cudart_error"] = f"{type(exc).__name__}: {exc}"
        try:
            from cuda.bindings import runtime

            err = runtime.cudaHostRegister(ptr, n, 0)[0]
            if int(err) == 0:
                runtime.cudaHostUnregister(ptr)
            out["cuda_python_runtime"] = int(err)
        except Exception as exc:  # noqa: BLE001
            out["cuda_python_runtime_error"] = f"{type(exc).__name__}: {exc}"
        codes = [v for k, v in out.items() if not k.endswith("_error")]
        out["fails"] = any(c != 0 for c in codes) if codes else None
        return out

    def multicast(self) -> dict[str, Any]:
        """SGLang's preflight: ``cuMulticastGetGranularity`` through cuda-python's driver binding."""
        try:
            from cuda.bindings import driver as d

            (err,) = d.cuInit(0)
            if int(err) == 0:
                err, dev = d.cuDeviceGet(self.index)
            if int(err) != 0:
                return {"error": f"driver binding unusable: {err!r}", "fails": None}
            out: dict[str, Any] = {}
            attr = getattr(d.CUdevice_attribute, "CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED", None)
            if attr is not None:  # without NVSwitch multicast is unsupported with CC off too: keep both
                aerr, value = d.cuDeviceGetAttribute(attr, dev)
                out["device_attribute_multicast_supported"] = int(value) if int(aerr) == 0 else None
            prop = d.CUmulticastObjectProp()
            prop.numDevices = 1
            prop.size = 2 << 20
            prop.handleTypes = d.CUmemAllocationHandleType.CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
            err, _gran = d.cuMulticastGetGranularity(
                prop, d.CUmulticastGranularity_flags.CU_MULTICAST_GRANULARITY_RECOMMENDED)
            return {**out, "cuMulticastGetGranularity": int(err), "fails": int(err) != 0}
        except Exception as exc:  # noqa: BLE001 - no cuda-python, or a binding without multicast
            return {"error": f"{type(exc).__name__}: {exc}", "fails": None}

    def close(self) -> None:
        self.torch.cuda.synchronize()


class SimTarget(Target):
    """The emulator's simulated device (CPU threads), playing ``profile``. Results are simulated."""

    kind = "simulated"

    def __init__(self, profile: Any = None, seed: int = 0) -> None:
        import torch

        from ..emulator import SimDevice

        self.torch = torch
        self.sim = SimDevice(profile, name="sim-calibrate", seed=seed)
        self.api = self.sim
        # The simulated copy is a host memcpy; torch's intra-op threads turn a 1 MiB one into tens of
        # ms on a busy small machine (OpenMP hand-offs), which would drown what is being measured.
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def host(self, nbytes: int, pinned: bool) -> Any:
        t = self.torch.empty(nbytes, dtype=self.torch.uint8)
        return t if pinned else self.sim.mark_pageable(t)

    def device(self, nbytes: int) -> Any:
        return self.sim.empty(nbytes, dtype=self.torch.uint8)

    def copy(self, dst: Any, src: Any) -> None:
        self.sim.copy_(dst, src, non_blocking=True)

    def busy(self, seconds: float) -> None:
        self.sim.launch(None, seconds)

    def tiny_kernel(self) -> None:
        self.sim.launch(None, 0.0)

    def make_graph(self, nodes: int) -> Callable[[], None]:
        g = self.sim.Graph()
        with self.sim.capture(g):
            for _ in range(nodes):
                self.sim.launch(None, 0.0)
        return g.replay

    def synchronize(self) -> None:
        self.sim.synchronize()

    def host_register(self) -> dict[str, Any]:
        rc = self.sim.host_register(self.torch.empty(16, dtype=self.torch.uint8))
        return {"simulated_host_register": rc, "fails": rc != 0}

    def multicast(self) -> dict[str, Any]:
        rc = self.sim.multicast_create()
        return {"simulated_multicast_create": rc, "fails": rc != 0}

    def close(self) -> None:
        self.sim.shutdown()
        self.torch.set_num_threads(self._threads)
