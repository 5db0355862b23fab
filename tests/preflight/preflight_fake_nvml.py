"""A stand-in for nvidia-ml-py's ``pynvml`` on machines without an NVIDIA driver (NVML's library cannot
exist on a CPU machine). Same function names, constants, structures (the real ctypes structure classes
are reused where nvidia-ml-py is installed) and calling conventions: the settings call takes a pointer
and returns a raw NVML code; the others raise ``NVMLError`` subclasses as nvidia-ml-py does."""

from __future__ import annotations

import ctypes
import types
from typing import Any


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - nvidia-ml-py's name
    pass


class _Settings(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("environment", ctypes.c_uint), ("ccFeature", ctypes.c_uint),
                ("devToolsMode", ctypes.c_uint), ("multiGpuMode", ctypes.c_uint)]


class _Report(ctypes.Structure):
    _fields_ = [("isCecAttestationReportPresent", ctypes.c_uint), ("attestationReportSize", ctypes.c_uint),
                ("cecAttestationReportSize", ctypes.c_uint), ("nonce", ctypes.c_uint8 * 32),
                ("attestationReport", ctypes.c_uint8 * 0x2000), ("cecAttestationReport", ctypes.c_uint8 * 0x1000)]


def make(*, cc_feature: int = 1, devtools: int = 0, multi_gpu: int = 0, ready: int | Exception = 1,
         driver: str | Exception = "580.95.05", gpus: list[str] | None = None, init_error: Exception | None = None,
         per_device_call: bool = True, echo_nonce: bool = True, report_error: Exception | None = None) -> Any:
    """``gpus``: per GPU, ``cc`` (protected memory reported), ``off`` (NOT_SUPPORTED) or ``error``."""
    gpus = ["cc"] if gpus is None else gpus
    m = types.ModuleType("pynvml")
    m.NVML_SUCCESS = 0
    m.NVML_CC_SYSTEM_FEATURE_ENABLED = 1
    m.NVML_CC_SYSTEM_MULTIGPU_PROTECTED_PCIE = 1
    m.NVMLError = NVMLError
    m.NVMLError_NotSupported = NVMLError_NotSupported
    m.calls = []

    def init() -> None:
        m.calls.append("init")
        if init_error is not None:
            raise init_error

    m.nvmlInit = init
    m.nvmlShutdown = lambda: m.calls.append("shutdown")

    def ready_state() -> int:
        if isinstance(ready, Exception):
            raise ready
        return ready

    m.nvmlSystemGetConfComputeGpusReadyState = ready_state
    m.nvmlSystemGetConfComputeCapabilities = lambda: types.SimpleNamespace(cpuCaps=2, gpusCaps=1)
    m.c_nvmlSystemConfComputeSettings_v1_t = _Settings

    def settings(ref: Any) -> int:
        for k, v in {"environment": 2, "ccFeature": cc_feature, "devToolsMode": devtools,
                     "multiGpuMode": multi_gpu}.items():
            setattr(ref._obj, k, v)
        return 0

    m.nvmlSystemGetConfComputeSettings = settings
    m.nvmlSystemGetConfComputeState = lambda: types.SimpleNamespace(environment=2, ccFeature=cc_feature,
                                                                    devToolsMode=devtools)

    def check_return(ret: int) -> int:
        if ret != 0:
            raise NVMLError(ret)
        return ret

    m._nvmlCheckReturn = check_return

    def driver_version() -> str:
        if isinstance(driver, Exception):
            raise driver
        return driver

    m.nvmlSystemGetDriverVersion = driver_version
    m.nvmlDeviceGetCount = lambda: len(gpus)
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    if per_device_call:
        def mem_size(handle: int) -> Any:
            kind = gpus[handle]
            if kind == "off":
                raise NVMLError_NotSupported("Not Supported")
            if kind == "error":
                raise NVMLError("Unknown Error")
            return types.SimpleNamespace(protectedMemSizeKib=80 << 20, unprotectedMemSizeKib=1 << 20)

        m.nvmlDeviceGetConfComputeMemSizeInfo = mem_size

    def report(handle: int, nonce: list[int]) -> _Report:
        if report_error is not None:
            raise report_error
        r = _Report()
        echoed = bytes(nonce) if echo_nonce else bytes(32)
        body = bytes([0x11, 0xE0, 0, 0]) + echoed + bytes([0]) + bytes(range(256)) * 4
        r.attestationReportSize = len(body)
        ctypes.memmove(r.attestationReport, body, len(body))
        return r

    m.nvmlDeviceGetConfComputeGpuAttestationReport = report
    return m
