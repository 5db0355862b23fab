"""CC detection through NVML. The NVML library cannot exist on a CPU machine, so a fake ``pynvml``
module stands in for nvidia-ml-py here: it has the same function names, constants and ctypes calling
convention (the settings call takes a pointer and returns a raw NVML code)."""

from __future__ import annotations

import ctypes
import types

import pytest

from cc_runtime import detect
from cc_runtime.settings import SettingsError


class _Settings(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("environment", ctypes.c_uint), ("ccFeature", ctypes.c_uint),
                ("devToolsMode", ctypes.c_uint), ("multiGpuMode", ctypes.c_uint)]


def fake_nvml(*, settings=None, settings_rc=0, state=None, init_error=None, has_settings=True,
              has_state=True, state_error=None, ready=1, cpu_caps=2):
    calls = []
    m = types.ModuleType("pynvml")
    m.NVML_SUCCESS = 0

    def init():
        calls.append("init")
        if init_error:
            raise init_error

    m.nvmlInit = init
    m.nvmlShutdown = lambda: calls.append("shutdown")
    m.nvmlSystemGetConfComputeGpusReadyState = lambda: ready
    m.nvmlSystemGetConfComputeCapabilities = lambda: types.SimpleNamespace(cpuCaps=cpu_caps, gpusCaps=1)
    if has_settings:
        m.c_nvmlSystemConfComputeSettings_v1_t = _Settings

        def get_settings(ref):
            calls.append("settings")
            if settings_rc == 0:
                for k, v in (settings or {}).items():
                    setattr(ref._obj, k, v)
            return settings_rc

        m.nvmlSystemGetConfComputeSettings = get_settings
    if has_state:
        def get_state():
            calls.append("state")
            if state_error:
                raise state_error
            return types.SimpleNamespace(**{"environment": 2, "ccFeature": 0, "devToolsMode": 0, **(state or {})})

        m.nvmlSystemGetConfComputeState = get_state
    m.calls = calls
    return m


def test_no_nvidia_ml_py(monkeypatch):
    monkeypatch.setattr(detect, "_nvml_library_missing", lambda: None)  # as on a machine with a driver
    monkeypatch.setattr(detect, "_import_pynvml", lambda: None)
    s = detect.probe_nvml()
    assert (s.enabled, s.source) == (False, "none") and "not installed" in s.reason


def test_no_driver_reads_off_with_reason():
    s = detect.probe_nvml(fake_nvml(init_error=RuntimeError("NVML Shared Library Not Found")))
    assert not s.enabled and "Shared Library" in s.reason


def test_cc_feature_on_via_settings_call():
    nv = fake_nvml(settings={"ccFeature": 1, "environment": 2})
    s = detect.probe_nvml(nv)
    assert (s.enabled, s.source, s.mode, s.real, s.label) == (True, "nvml", "on", True, "on")
    assert s.cpu_tee == "intel-tdx" and s.gpus_ready is True and s.environment == "prod"
    assert nv.calls[-1] == "shutdown" and "state" not in nv.calls


def test_devtools_mode_is_still_cc():
    s = detect.probe_nvml(fake_nvml(settings={"ccFeature": 1, "devToolsMode": 1}))
    assert s.enabled and s.mode == "devtools" and s.devtools is True


def test_protected_pcie_counts_as_cc():
    s = detect.probe_nvml(fake_nvml(settings={"ccFeature": 0, "multiGpuMode": 1}))
    assert s.enabled and s.mode == "protected-pcie" and "protected PCIe" in s.reason


def test_nvlink_encryption_alone_is_not_cc():
    s = detect.probe_nvml(fake_nvml(settings={"ccFeature": 0, "multiGpuMode": 2}))
    assert not s.enabled and s.source == "nvml" and "NVLink" in s.reason


def test_settings_error_code_falls_back_to_state_call():
    nv = fake_nvml(settings_rc=3, state={"ccFeature": 1})
    s = detect.probe_nvml(nv)
    assert s.enabled and nv.calls.count("state") == 1
    assert "error 3" in s.details["fallback_reason"]


def test_old_nvidia_ml_py_without_settings_call_uses_state():
    s = detect.probe_nvml(fake_nvml(has_settings=False, state={"ccFeature": 0}))
    assert not s.enabled and s.source == "nvml" and "too old" in s.details["fallback_reason"]


def test_neither_call_available():
    s = detect.probe_nvml(fake_nvml(has_settings=False, has_state=False))
    assert not s.enabled and s.source == "none" and "12.535.77" in s.reason


def test_nvml_errors_never_raise_and_always_shut_down():
    nv = fake_nvml(has_settings=False, state_error=RuntimeError("NVML_ERROR_NOT_SUPPORTED"))
    s = detect.probe_nvml(nv)
    assert not s.enabled and "NOT_SUPPORTED" in s.reason and nv.calls[-1] == "shutdown"


def test_env_forces_on_and_off():
    nv = fake_nvml(settings={"ccFeature": 1})
    assert detect.resolve(env={"CC_RUNTIME_CC": "0"}, pynvml=nv).enabled is False
    forced = detect.resolve(env={"CC_RUNTIME_CC": "1"}, pynvml=fake_nvml())
    assert (forced.enabled, forced.source, forced.real) == (True, "env", False)
    assert detect.resolve(cc="1", env={"CC_RUNTIME_CC": "0"}, pynvml=fake_nvml()).enabled


def test_emulation_is_its_own_state_and_refused_on_real_cc():
    s = detect.resolve(env={"CC_RUNTIME_EMULATE": "h100"}, pynvml=fake_nvml())
    assert (s.enabled, s.source, s.label) == (True, "emulated", "emulated:h100")
    real = detect.resolve(env={"CC_RUNTIME_EMULATE": "h100"}, pynvml=fake_nvml(settings={"ccFeature": 1}))
    assert real.source == "nvml" and real.real and "refused" in real.reason


def test_resolve_raises_on_invalid_settings_but_cc_state_does_not(monkeypatch):
    with pytest.raises(SettingsError):
        detect.resolve(env={"CC_RUNTIME_CC": "maybe"})
    monkeypatch.setenv("CC_RUNTIME_CC", "maybe")
    detect.reset()
    s = detect.cc_state()
    assert not s.enabled and "CC_RUNTIME_CC" in s.reason


def test_state_is_cached_until_reset(monkeypatch):
    monkeypatch.setenv("CC_RUNTIME_CC", "1")
    detect.reset()
    first = detect.cc_state()
    monkeypatch.setenv("CC_RUNTIME_CC", "0")
    assert detect.cc_state() is first
    detect.reset()
    assert detect.cc_state().enabled is False


def test_state_is_immutable_and_serialisable():
    s = detect.CCState(True, "env", "forced")
    with pytest.raises(AttributeError):
        s.enabled = False  # type: ignore[misc]
    assert s.as_dict()["label"] == "on"


def test_no_driver_reads_off_without_importing_nvidia_ml_py(monkeypatch):
    """Off-GPU machines: one dlopen instead of importing pynvml (start-up cost of every process)."""
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("the library pre-check is Linux-only")
    calls = []
    monkeypatch.setattr(detect, "_nvml_library_missing", lambda: "libnvidia-ml.so.1 cannot be loaded (test)")
    monkeypatch.setattr(detect, "_import_pynvml", lambda: calls.append(1))
    s = detect.probe_nvml()
    assert (s.enabled, calls) == (False, []) and "libnvidia-ml.so.1" in s.reason
    monkeypatch.undo()
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        present = True
    except OSError:
        present = False
    assert (detect._nvml_library_missing() is None) == present
