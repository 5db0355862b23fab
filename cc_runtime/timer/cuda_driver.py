"""The PTX stamp kernels (kernels/globaltimer.ptx) loaded and launched through the CUDA driver API.

cuda-python's ``cuda.bindings.driver`` (``cuda.cuda`` in releases before 12.6 moved it); no nvcc or C
compiler: ``cuModuleLoadData`` JIT-compiles the PTX for the GPU at hand. One module per device
context (modules belong to a context). Kernel arguments are passed the C way, as an array of
pointers to the argument values (``kernelParams``), which every cuda-python release accepts as an int.
"""

from __future__ import annotations

import ctypes
import threading
from types import ModuleType
from typing import Any

from .kernel_files import read_kernel

PTX_FILE = "globaltimer.ptx"
STAMP = b"cc_globaltimer_stamp"
GRANULARITY = b"cc_globaltimer_granularity"
SPIN = b"cc_spin_cycles"


class DriverError(RuntimeError):
    pass


def import_driver() -> ModuleType:
    """``cuda.bindings.driver`` (cuda-python >= 12.6) or the older ``cuda.cuda``; ImportError if neither."""
    try:
        from cuda.bindings import driver

        return driver
    except ImportError:
        pass
    try:
        from cuda import cuda as driver  # type: ignore[attr-defined,no-redef]

        return driver  # type: ignore[no-any-return]
    except ImportError as exc:
        raise ImportError("cuda-python is not installed (pip install cuda-python)") from exc


def _check(drv: ModuleType, result: Any, what: str) -> Any:
    """cuda-python returns ``(CUresult, *values)``; raise on an error code, return the value(s)."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        name = str(err)
        try:
            rc, msg = drv.cuGetErrorString(err)
            if int(rc) == 0 and msg:
                name = f"{err}: {msg.decode() if isinstance(msg, bytes) else msg}"
        except Exception:  # noqa: BLE001 - the original error is what matters
            pass
        raise DriverError(f"{what} failed ({name})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


class _Module:
    def __init__(self, drv: ModuleType, module: Any) -> None:
        self.module = module
        self.stamp = _check(drv, drv.cuModuleGetFunction(module, STAMP), "cuModuleGetFunction(stamp)")
        self.granularity = _check(drv, drv.cuModuleGetFunction(module, GRANULARITY),
                                  "cuModuleGetFunction(granularity)")
        self.spin = _check(drv, drv.cuModuleGetFunction(module, SPIN), "cuModuleGetFunction(spin)")


class DriverStampKernels:
    """Launches the stamp kernels on a given CUDA stream of device ``device_index``."""

    backend = "cuda-python"

    def __init__(self, device_index: int) -> None:
        self.drv = import_driver()
        self.device_index = device_index
        # A C string at a fixed address: every cuda-python release takes an int as ``void*``.
        self._ptx = ctypes.create_string_buffer(read_kernel(PTX_FILE).encode("utf-8"))
        self._modules: dict[int, _Module] = {}
        self._lock = threading.Lock()
        _check(self.drv, self.drv.cuInit(0), "cuInit")
        self._module()  # load now: loading during a graph capture would be illegal

    def _context(self) -> int:
        drv = self.drv
        ctx = _check(drv, drv.cuCtxGetCurrent(), "cuCtxGetCurrent")
        if ctx is None or int(ctx) == 0:
            # A thread that never touched CUDA through torch: use the device's primary context, which
            # is the one torch (the runtime API) uses.
            dev = _check(drv, drv.cuDeviceGet(self.device_index), "cuDeviceGet")
            ctx = _check(drv, drv.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
            _check(drv, drv.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        return int(ctx)

    def _module(self) -> _Module:
        key = self._context()
        mod = self._modules.get(key)
        if mod is None:
            with self._lock:
                mod = self._modules.get(key)
                if mod is None:
                    module = _check(self.drv, self.drv.cuModuleLoadData(ctypes.addressof(self._ptx)),
                                    "cuModuleLoadData(globaltimer.ptx)")
                    mod = self._modules[key] = _Module(self.drv, module)
        return mod

    def _launch(self, fn: Any, stream_handle: int, *args: ctypes._SimpleCData) -> None:
        params = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
        stream = self.drv.CUstream(int(stream_handle))
        # The driver copies the argument values during the call, so the ctypes objects may die after it.
        _check(self.drv, self.drv.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, stream, ctypes.addressof(params), 0),
               "cuLaunchKernel")

    # Same interface as triton_stamp.TritonStampKernels: int64 torch tensors and torch streams.
    def stamp(self, buf: Any, index: int, stream: Any) -> None:
        self._launch(self._module().stamp, stream.cuda_stream, ctypes.c_uint64(buf.data_ptr()),
                     ctypes.c_uint32(index))

    def granularity(self, out: Any, reads: int, stream: Any) -> None:
        self._launch(self._module().granularity, stream.cuda_stream, ctypes.c_uint64(out.data_ptr()),
                     ctypes.c_uint32(reads))

    def spin(self, cycles: int, stream: Any) -> None:
        self._launch(self._module().spin, stream.cuda_stream, ctypes.c_uint64(cycles))
