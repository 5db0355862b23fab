"""The cuda-python launch path and the GlobalTimer glue, checked on CPU.

Stand-ins, and why: there is no libcuda here, so ``FakeDriver`` plays ``cuda.bindings.driver`` with
cuda-python's calling convention (functions return ``(CUresult, value)``; ``kernelParams`` given as
an int is a ``void**``). Its ``cuLaunchKernel`` decodes the argument array exactly as the CUDA driver
would and "runs" the stamp kernel by writing the fake clock's time to the device pointer, which is
the address of a CPU torch tensor here. CPU torch has no streams: ``current_stream``,
``is_current_stream_capturing`` and ``synchronize`` are replaced by trivial stand-ins.
"""

from __future__ import annotations

import ctypes
import enum
import types

import pytest

torch = pytest.importorskip("torch")

from cc_runtime.timer import FakeClock, measure  # noqa: E402
from cc_runtime.timer import cuda_driver as cd  # noqa: E402
from cc_runtime.timer.select import build_globaltimer  # noqa: E402


class CUresult(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_INVALID_VALUE = 1


class _Handle:
    def __init__(self, value: int = 0) -> None:
        self.value = int(value)

    def __int__(self) -> int:
        return self.value


class FakeDriver(types.SimpleNamespace):
    """Enough of cuda.bindings.driver for DriverStampKernels, mimicking its conventions."""

    def __init__(self, clock: FakeClock, current_ctx: int = 0) -> None:
        super().__init__()
        self.clock = clock
        self.current = current_ctx
        self.loaded: list[str] = []
        self.loaded_in: list[int] = []  # the context current at each cuModuleLoadData
        self.launched_in: list[int] = []  # the context current at each cuLaunchKernel
        self.pushed: list[int] = []
        self.launches: list[tuple[str, int, tuple[int, ...]]] = []
        self.CUstream = _Handle
        self.CUresult = CUresult

    driver_version = 13000  # what cuDriverGetVersion reports (CUDA 13.0)

    def cuInit(self, flags):
        return (CUresult.CUDA_SUCCESS,)

    def cuDriverGetVersion(self):
        return (CUresult.CUDA_SUCCESS, self.driver_version)

    def cuGetErrorString(self, err):
        return (CUresult.CUDA_SUCCESS, b"fake error")

    def cuCtxGetCurrent(self):
        return (CUresult.CUDA_SUCCESS, _Handle(self.current))

    def cuDeviceGet(self, ordinal):
        return (CUresult.CUDA_SUCCESS, _Handle(ordinal))

    def cuDevicePrimaryCtxRetain(self, dev):
        return (CUresult.CUDA_SUCCESS, _Handle(0xC0 + int(dev)))

    def cuCtxPushCurrent(self, ctx):
        self.pushed.append(self.current)
        self.current = int(ctx)
        return (CUresult.CUDA_SUCCESS,)

    def cuCtxPopCurrent(self):
        popped, self.current = self.current, self.pushed.pop()
        return (CUresult.CUDA_SUCCESS, _Handle(popped))

    def cuModuleLoadData(self, image):
        assert isinstance(image, int), "pass the PTX as an address (accepted by every cuda-python)"
        self.loaded.append(ctypes.string_at(image).decode())
        self.loaded_in.append(self.current)
        return (CUresult.CUDA_SUCCESS, _Handle(len(self.loaded)))

    def cuModuleGetFunction(self, module, name):
        assert isinstance(name, bytes)
        if f".entry {name.decode()}(" not in self.loaded[int(module) - 1]:
            return (CUresult.CUDA_ERROR_INVALID_VALUE, None)
        return (CUresult.CUDA_SUCCESS, name.decode())

    def cuLaunchKernel(self, f, gx, gy, gz, bx, by, bz, shmem, stream, kernel_params, extra):
        assert (gx, gy, gz, bx, by, bz, shmem, extra) == (1, 1, 1, 1, 1, 1, 0, 0)
        assert isinstance(kernel_params, int)
        if f == "cc_globaltimer_stamp":  # (u64 buf, u32 idx)
            argv = (ctypes.c_void_p * 2).from_address(kernel_params)
            buf = ctypes.c_uint64.from_address(argv[0]).value
            idx = ctypes.c_uint32.from_address(argv[1]).value
            ctypes.c_int64.from_address(buf + 8 * idx).value = self.clock.now_ns
            args: tuple[int, ...] = (buf, idx)
        elif f == "cc_globaltimer_granularity":  # (u64 out, u32 reads)
            argv = (ctypes.c_void_p * 2).from_address(kernel_params)
            out = ctypes.c_uint64.from_address(argv[0]).value
            ctypes.c_int64.from_address(out).value = 32
            args = (out, ctypes.c_uint32.from_address(argv[1]).value)
        elif f == "cc_spin_cycles":  # (u64 cycles)
            argv = (ctypes.c_void_p * 1).from_address(kernel_params)
            cycles = ctypes.c_uint64.from_address(argv[0]).value
            self.clock.advance(cycles)
            args = (cycles,)
        else:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        self.launches.append((f, int(stream), args))
        self.launched_in.append(self.current)
        return (CUresult.CUDA_SUCCESS,)


@pytest.fixture
def cpu_streams(monkeypatch):
    stream = types.SimpleNamespace(cuda_stream=0x5EED)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: stream)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    return stream


def test_driver_kernels_pack_arguments_like_the_cuda_driver(monkeypatch, cpu_streams):
    clock = FakeClock()
    drv = FakeDriver(clock)
    monkeypatch.setattr(cd, "import_driver", lambda: drv)
    kernels = cd.DriverStampKernels(0)
    # no current context: the module went into the device's primary context, lent for the call only
    assert drv.loaded_in == [0xC0] and drv.current == 0 and drv.pushed == []
    assert ".entry cc_globaltimer_stamp" in drv.loaded[0]
    buf = torch.zeros(8, dtype=torch.int64)
    kernels.stamp(buf, 5, cpu_streams)
    assert int(buf[5]) == clock.now_ns
    assert drv.launches[-1] == ("cc_globaltimer_stamp", 0x5EED, (buf.data_ptr(), 5))
    assert drv.launched_in == [0xC0]
    kernels.spin(12345, cpu_streams)
    assert drv.launches[-1] == ("cc_spin_cycles", 0x5EED, (12345,))


def test_module_lives_in_the_devices_primary_context(monkeypatch, cpu_streams):
    """torch's streams belong to the device's primary context: with another context current on the
    thread (another device's), that context is pushed for the call and popped after; one module."""
    drv = FakeDriver(FakeClock(), current_ctx=0xA)
    monkeypatch.setattr(cd, "import_driver", lambda: drv)
    kernels = cd.DriverStampKernels(0)
    buf = torch.zeros(2, dtype=torch.int64)
    kernels.stamp(buf, 0, cpu_streams)
    assert drv.loaded_in == [0xC0] and drv.launched_in == [0xC0]
    assert drv.current == 0xA and drv.pushed == []  # the thread's own context is back
    drv.current = 0xC0  # the device's primary context current: launched as is
    kernels.stamp(buf, 1, cpu_streams)
    assert drv.launched_in == [0xC0, 0xC0] and drv.current == 0xC0
    assert len(drv.loaded) == 1


def test_driver_errors_become_clear_exceptions(monkeypatch, cpu_streams):
    drv = FakeDriver(FakeClock())
    drv.cuModuleGetFunction = lambda module, name: (CUresult.CUDA_ERROR_INVALID_VALUE, None)
    monkeypatch.setattr(cd, "import_driver", lambda: drv)
    with pytest.raises(cd.DriverError, match="cuModuleGetFunction.*fake error"):
        cd.DriverStampKernels(0)


def test_globaltimer_over_the_driver_path_self_tests_and_measures(monkeypatch, cpu_streams):
    clock = FakeClock()
    drv = FakeDriver(clock)
    monkeypatch.setattr(cd, "import_driver", lambda: drv)
    timer = build_globaltimer(0, cd.DriverStampKernels(0), buffer_device="cpu")
    assert timer.name == "globaltimer" and timer.self_test is not None and timer.self_test.ok
    assert timer.granularity_ms == pytest.approx(32e-6)  # from the granularity kernel's answer
    r = measure(clock.work(0.3), warmup=1, rep=10, timer=timer, flush_l2=False)
    assert r.median == pytest.approx(0.3, abs=1e-6)
    assert r.readbacks == 2


def test_bindings_newer_than_the_driver_are_refused_with_the_fix(monkeypatch, cpu_streams):
    """cuda-python 13.x on a CUDA 12.4 driver: a clear error naming the fix (select then uses Triton)."""
    drv = FakeDriver(FakeClock())
    drv.driver_version = 12040
    monkeypatch.setattr(cd, "import_driver", lambda: drv)
    monkeypatch.setattr(cd, "bindings_version", lambda: "13.0.1")
    with pytest.raises(cd.DriverError, match=r"cuda-python 13\.0\.1 .* CUDA 12\.4.*cuda-python>=12,<13.*Triton"):
        cd.DriverStampKernels(0)
    assert drv.loaded == [], "refused before loading anything"
    monkeypatch.setattr(cd, "bindings_version", lambda: "12.9.0")  # matched: accepted
    cd.DriverStampKernels(0)
    drv.driver_version = 13020  # a newer driver runs older bindings
    cd.DriverStampKernels(0)


def test_the_installed_bindings_version_is_found():
    pytest.importorskip("cuda.bindings")
    version = cd.bindings_version()
    assert version and version.split(".")[0].isdigit()


def test_capture_is_checked_on_the_stream_the_stamp_is_launched_on(monkeypatch, cpu_streams):
    """A side stream under capture refuses the stamp though the current stream is not capturing; a
    capture on the current stream does not refuse a stamp launched on another stream."""
    import contextlib

    clock = FakeClock()
    drv = FakeDriver(clock)
    monkeypatch.setattr(cd, "import_driver", lambda: drv)
    timer = build_globaltimer(0, cd.DriverStampKernels(0), buffer_device="cpu")
    side = types.SimpleNamespace(cuda_stream=0x51DE)
    state = {"current": cpu_streams, "capturing": side}

    @contextlib.contextmanager
    def stream_ctx(s):
        prev, state["current"] = state["current"], s
        try:
            yield s
        finally:
            state["current"] = prev

    monkeypatch.setattr(torch.cuda, "stream", stream_ctx)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: state["current"] is state["capturing"])
    with pytest.raises(RuntimeError, match="CUDA graph capture"):
        timer.event().record(side)
    state["capturing"] = cpu_streams  # now the current stream captures; the stamp goes to the side stream
    timer.event().record(side)
    assert drv.launches[-1][:2] == ("cc_globaltimer_stamp", 0x51DE)
    with pytest.raises(RuntimeError, match="CUDA graph capture"):
        timer.event().record()  # on the current (capturing) stream
    with pytest.raises(RuntimeError, match="CUDA graph capture"):
        timer.event().record(cpu_streams)  # the current stream passed explicitly: still refused
    entered = []
    monkeypatch.setattr(torch.cuda, "stream", lambda s: entered.append(s) or stream_ctx(s))
    state["capturing"] = None
    timer.event().record(cpu_streams)
    assert entered == [], "a stamp on the current stream, passed explicitly, needs no stream switch"
    timer.event().record(side)
    assert entered == [side]


def test_bindings_that_cannot_load_the_driver_say_so(monkeypatch):
    def broken_import():
        raise RuntimeError("Function cuGetProcAddress_v2 not found")  # what mismatched bindings raise

    monkeypatch.setattr(cd, "import_driver", broken_import)
    monkeypatch.setattr(cd, "bindings_version", lambda: "13.0.1")
    with pytest.raises(cd.DriverError, match=r"cuda-python 13\.0\.1 could not load the CUDA driver.*Triton"):
        cd.DriverStampKernels(0)
