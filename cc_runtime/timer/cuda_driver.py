"""The PTX stamp kernels (kernels/globaltimer.ptx) loaded and launched through the CUDA driver API.

cuda-python's ``cuda.bindings.driver`` (``cuda.cuda`` in releases before 12.6 moved it); no nvcc or C
compiler: ``cuModuleLoadData`` JIT-compiles the PTX for the GPU at hand. One module per device, in its
primary context (the one torch's streams belong to), which is made current for each launch. Kernel
arguments are passed the C way, as an array of pointers to the argument values (``kernelParams``),
which every cuda-python release accepts as an int.
"""

from __future__ import annotations

import ctypes
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


def bindings_version() -> str | None:
    """The installed cuda-python bindings' version (``cuda-bindings``, or ``cuda-python`` before the split)."""
    import importlib.metadata

    try:
        from cuda import bindings

        version = getattr(bindings, "__version__", None)
        if version:
            return str(version)
    except ImportError:
        pass
    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def check_bindings_match_driver(drv: ModuleType, bindings: str | None) -> None:
    """cuda-python N.x is built for CUDA N and needs a driver of that CUDA major version or newer.

    With 13.x bindings on a 12.x driver calls fail in ways that do not say why; refuse up front with
    the fix (the caller then falls back to the Triton stamp kernel).
    """
    if not bindings:
        return
    try:
        major = int(bindings.split(".")[0])
    except ValueError:
        return
    driver = int(_check(drv, drv.cuDriverGetVersion(), "cuDriverGetVersion"))
    drv_major, drv_minor = driver // 1000, (driver % 1000) // 10
    if major > drv_major:
        raise DriverError(
            f"cuda-python {bindings} is built for CUDA {major}, but this NVIDIA driver supports CUDA "
            f"{drv_major}.{drv_minor}: install bindings that match it (pip install 'cuda-python>={drv_major},"
            f"<{drv_major + 1}') or update the driver; the Triton stamp kernel is used instead")


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
        try:
            drv = self.drv = import_driver()
        except ImportError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. bindings for a newer CUDA than the driver
            raise DriverError(f"cuda-python {bindings_version()} could not load the CUDA driver "
                              f"({type(exc).__name__}: {exc}); its major version must not exceed the "
                              "driver's CUDA version; the Triton stamp kernel is used instead") from exc
        self.device_index = device_index
        _check(drv, drv.cuInit(0), "cuInit")
        check_bindings_match_driver(drv, bindings_version())
        # torch's streams belong to the device's primary context (the runtime API's), so the module is
        # loaded there and launched there, whichever context the calling thread has current.
        dev = _check(drv, drv.cuDeviceGet(device_index), "cuDeviceGet")
        self._ctx = _check(drv, drv.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        # A C string at a fixed address: every cuda-python release takes an int as ``void*``.
        ptx = ctypes.create_string_buffer(read_kernel(PTX_FILE).encode("utf-8"))
        pushed = self._enter()  # load now: loading during a graph capture would be illegal
        try:
            module = _check(drv, drv.cuModuleLoadData(ctypes.addressof(ptx)), "cuModuleLoadData(globaltimer.ptx)")
            self._mod = _Module(drv, module)
        finally:
            self._exit(pushed)

    def _enter(self) -> bool:
        """Make the device's primary context current; True if it was pushed (pop it after)."""
        drv = self.drv
        current = _check(drv, drv.cuCtxGetCurrent(), "cuCtxGetCurrent")
        current = 0 if current is None else int(current)
        if current == int(self._ctx):
            return False
        # None current (a thread that never touched CUDA) or another device's: lend ours for this call
        # only, so the thread's CUDA device (which torch reads from the current context) never changes.
        _check(drv, drv.cuCtxPushCurrent(self._ctx), "cuCtxPushCurrent")
        return True

    def _exit(self, pushed: bool) -> None:
        if pushed:
            _check(self.drv, self.drv.cuCtxPopCurrent(), "cuCtxPopCurrent")

    def _launch(self, fn: Any, stream_handle: int, *args: ctypes._SimpleCData) -> None:
        params = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
        stream = self.drv.CUstream(int(stream_handle))
        pushed = self._enter()
        try:
            # The driver copies the argument values during the call, so the ctypes objects may die after it.
            _check(self.drv, self.drv.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, stream, ctypes.addressof(params), 0),
                   "cuLaunchKernel")
        finally:
            self._exit(pushed)

    # Same interface as triton_stamp.TritonStampKernels: int64 torch tensors and torch streams.
    def stamp(self, buf: Any, index: int, stream: Any) -> None:
        self._launch(self._mod.stamp, stream.cuda_stream, ctypes.c_uint64(buf.data_ptr()),
                     ctypes.c_uint32(index))

    def granularity(self, out: Any, reads: int, stream: Any) -> None:
        self._launch(self._mod.granularity, stream.cuda_stream, ctypes.c_uint64(out.data_ptr()),
                     ctypes.c_uint32(reads))

    def spin(self, cycles: int, stream: Any) -> None:
        self._launch(self._mod.spin, stream.cuda_stream, ctypes.c_uint64(cycles))
