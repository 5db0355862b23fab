"""Is NVIDIA Confidential Computing on? Answered once per process through NVML, never raising.

Precedence: explicit argument > ``CC_RUNTIME_CC`` / ``CC_RUNTIME_EMULATE`` > NVML > "off".
NVML is read through nvidia-ml-py (module ``pynvml``). The settings call is preferred because it
reports the multi-GPU mode: protected PCIe counts as CC (the bounce-buffer costs apply), NVLink
encryption alone does not (TensorRT-LLM PR 16850 fixed exactly that confusion). FlashInfer 0.7.2
only checks ``ccFeature`` and so misses protected-PCIe machines; SGLang 0.5.23 agrees with us.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import ModuleType

from . import settings as _settings

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any


_CPU_TEE = {0: "none", 1: "amd-sev", 2: "intel-tdx", 3: "amd-sev-snp", 4: "amd-snp-vtom"}
_ENVIRONMENT = {0: "unavailable", 1: "sim", 2: "prod"}
_MULTI_GPU = {0: "none", 1: "protected-pcie", 2: "nvlink-encryption"}


_FIELDS = ("enabled", "source", "reason", "mode", "real", "profile", "environment", "multi_gpu_mode",
           "devtools", "gpus_ready", "cpu_tee", "details")


class CCState:
    """What cc_runtime believes about CC in this process (immutable).

    ``enabled`` is what gates every patch: true for real CC, forced CC and emulated CC alike.
    ``real`` is true only when NVML says the hardware is in CC mode (the emulator refuses then).
    ``source``: nvml | env | emulated | none | disabled. A plain class, not a dataclass: this module is
    imported at every bootstrapped process start, and dataclasses pulls in ``inspect``.
    """

    __slots__ = _FIELDS
    enabled: bool
    source: str
    reason: str
    mode: str  # off | on | devtools | protected-pcie | forced | emulated | disabled
    real: bool
    profile: str | None
    environment: str | None
    multi_gpu_mode: str | None
    devtools: bool | None
    gpus_ready: bool | None
    cpu_tee: str | None
    details: Mapping[str, Any]

    def __init__(self, enabled: bool, source: str, reason: str, mode: str = "off", real: bool = False,
                 profile: str | None = None, environment: str | None = None,
                 multi_gpu_mode: str | None = None, devtools: bool | None = None,
                 gpus_ready: bool | None = None, cpu_tee: str | None = None,
                 details: Mapping[str, Any] | None = None) -> None:
        values = (enabled, source, reason, mode, real, profile, environment, multi_gpu_mode, devtools,
                  gpus_ready, cpu_tee, dict(details or {}))
        for name, value in zip(_FIELDS, values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("CCState is immutable")

    def _tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) if f != "details" else sorted(self.details.items()) for f in _FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CCState) and self._tuple() == other._tuple()

    def __hash__(self) -> int:
        return hash(self._tuple()[:6])

    def __repr__(self) -> str:
        return "CCState(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in _FIELDS) + ")"

    @property
    def label(self) -> str:
        """The state every JSON output carries: ``off``, ``on``, ``emulated:<profile>`` or ``disabled``."""
        if self.source == "disabled":
            return "disabled"
        if self.source == "emulated":
            return f"emulated:{self.profile}"
        return "on" if self.enabled else "off"

    def as_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in _FIELDS}
        d["label"] = self.label
        d["details"] = dict(self.details)
        return d


def disabled_state() -> CCState:
    return CCState(False, "disabled", "CC_RUNTIME_DISABLE=1: cc_runtime does nothing in this process",
                   mode="disabled")


def to_decision(state: CCState, cc_raw: str, emulate_raw: str) -> str:
    """The decision a parent exports (``CC_RUNTIME_DECISION``), with the inputs it was made from."""
    import json

    return json.dumps({"v": 1, "enabled": state.enabled, "real": state.real, "source": state.source,
                       "mode": state.mode, "reason": state.reason, "profile": state.profile,
                       "cc": cc_raw, "emulate": emulate_raw}, separators=(",", ":"))


def from_decision(data: Mapping[str, Any]) -> CCState:
    return CCState(bool(data["enabled"]), str(data["source"]), f"inherited from the parent process: {data['reason']}",
                   mode=str(data["mode"]), real=bool(data["real"]), profile=data.get("profile"),
                   details={"inherited": True})


def _import_pynvml() -> ModuleType | None:
    try:
        import pynvml
    except Exception:  # noqa: BLE001 - a broken install must read as "no NVML", not crash the user
        return None
    return pynvml


def _nvml_library_missing() -> str | None:
    """Why NVML's library cannot be loaded, checked before importing nvidia-ml-py.

    On a machine without an NVIDIA driver this answers "off" for the cost of a dlopen, instead of
    importing pynvml (~15 ms: ctypes.util, subprocess, tempfile) to learn the same. Linux only (pynvml
    searches other paths elsewhere); the same library name pynvml loads.
    """
    import sys

    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError as exc:
        return f"libnvidia-ml.so.1 cannot be loaded ({exc})"
    return None


def probe_nvml(pynvml: ModuleType | None = None) -> CCState:
    """Read CC state from NVML. Every failure becomes ``CCState(enabled=False, reason=...)``."""
    if pynvml is None:
        missing = _nvml_library_missing()
        if missing:
            return CCState(False, "none", f"NVML unavailable (no GPU or driver): {missing}")
        pynvml = _import_pynvml()
    if pynvml is None:
        return CCState(False, "none", "nvidia-ml-py (pynvml) is not installed")
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001
        return CCState(False, "none", f"NVML unavailable (no GPU or driver): {exc}")
    try:
        return _read_cc(pynvml)
    except Exception as exc:  # noqa: BLE001
        return CCState(False, "none", f"NVML CC query failed: {type(exc).__name__}: {exc}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _read_cc(pynvml: ModuleType) -> CCState:
    import ctypes

    extra: dict[str, Any] = {}
    ready = _optional(lambda: pynvml.nvmlSystemGetConfComputeGpusReadyState())
    caps = _optional(lambda: pynvml.nvmlSystemGetConfComputeCapabilities())
    cpu_tee = _CPU_TEE.get(getattr(caps, "cpuCaps", -1)) if caps is not None else None
    gpus_ready = bool(ready) if ready is not None else None

    settings_struct = getattr(pynvml, "c_nvmlSystemConfComputeSettings_v1_t", None)
    settings_fn = getattr(pynvml, "nvmlSystemGetConfComputeSettings", None)
    settings_error = "nvidia-ml-py too old for nvmlSystemGetConfComputeSettings (needs >= 12.550.52)"
    if settings_struct is not None and settings_fn is not None:
        s = settings_struct()
        try:
            # The wrapper hands back NVML's raw return code instead of raising: check it ourselves.
            rc = settings_fn(ctypes.byref(s))
        except Exception as exc:  # noqa: BLE001
            rc, settings_error = None, f"nvmlSystemGetConfComputeSettings raised {exc}"
        if rc == getattr(pynvml, "NVML_SUCCESS", 0):
            feature = bool(s.ccFeature)
            multi = _MULTI_GPU.get(s.multiGpuMode, f"unknown({s.multiGpuMode})")
            devtools = bool(s.devToolsMode)
            env = _ENVIRONMENT.get(s.environment, str(s.environment))
            extra.update(call="settings", ccFeature=s.ccFeature, multiGpuMode=s.multiGpuMode)
            if feature or multi == "protected-pcie":
                mode = "devtools" if devtools else ("on" if feature else "protected-pcie")
                why = "ccFeature enabled" if feature else "multi-GPU protected PCIe mode"
                return CCState(True, "nvml", f"NVML settings: {why}", mode=mode, real=True,
                               environment=env, multi_gpu_mode=multi, devtools=devtools,
                               gpus_ready=gpus_ready, cpu_tee=cpu_tee, details=extra)
            why = "NVLink encryption only (not CC)" if multi == "nvlink-encryption" else "ccFeature disabled"
            return CCState(False, "nvml", f"NVML settings: {why}", environment=env, multi_gpu_mode=multi,
                           devtools=devtools, gpus_ready=gpus_ready, cpu_tee=cpu_tee, details=extra)
        if rc is not None:
            settings_error = f"nvmlSystemGetConfComputeSettings returned NVML error {rc}"

    state_fn = getattr(pynvml, "nvmlSystemGetConfComputeState", None)
    if state_fn is None:
        return CCState(False, "none", f"{settings_error}; nvmlSystemGetConfComputeState missing too "
                       "(nvidia-ml-py >= 12.535.77 needed)", cpu_tee=cpu_tee)
    st = state_fn()
    feature = bool(st.ccFeature)
    devtools = bool(st.devToolsMode)
    env = _ENVIRONMENT.get(st.environment, str(st.environment))
    extra.update(call="state", ccFeature=st.ccFeature, fallback_reason=settings_error)
    if feature:
        return CCState(True, "nvml", "NVML state: ccFeature enabled", mode="devtools" if devtools else "on",
                       real=True, environment=env, devtools=devtools, gpus_ready=gpus_ready,
                       cpu_tee=cpu_tee, details=extra)
    return CCState(False, "nvml", "NVML state: ccFeature disabled", environment=env, devtools=devtools,
                   gpus_ready=gpus_ready, cpu_tee=cpu_tee, details=extra)


def _optional(call: Any) -> Any:
    try:
        return call()
    except Exception:  # noqa: BLE001 - optional facts; older drivers lack them
        return None


def resolve(
    cc: str | None = None,
    emulate: str | None = None,
    env: Mapping[str, str] | None = None,
    pynvml: ModuleType | None = None,
) -> CCState:
    """Combine arguments, environment and NVML into one state (uncached).

    Raises SettingsError for invalid settings; the automatic bootstrap catches that. Without explicit
    arguments, a decision inherited from the parent process (``CC_RUNTIME_DECISION``) is reused when it
    was made from the same ``CC_RUNTIME_CC`` / ``CC_RUNTIME_EMULATE`` this process sees: a child with
    its own setting decides for itself, every other child skips NVML.
    """
    if cc is None and emulate is None:
        inherited = _settings.get("CC_RUNTIME_DECISION", None, env)
        if (inherited is not None and inherited["cc"] == _settings.raw("CC_RUNTIME_CC", env)
                and inherited["emulate"] == _settings.raw("CC_RUNTIME_EMULATE", env)):
            return from_decision(inherited)
    cc_setting = _settings.get("CC_RUNTIME_CC", cc, env)
    emulate_setting = _settings.get("CC_RUNTIME_EMULATE", emulate, env)
    if emulate_setting:
        hw = probe_nvml(pynvml)
        if hw.real:
            # Emulating on top of real CC would double-count every cost: refuse, keep the real state.
            return CCState(True, hw.source, f"{hw.reason}; emulation refused because real CC is on",
                           mode=hw.mode, real=True, environment=hw.environment,
                           multi_gpu_mode=hw.multi_gpu_mode, devtools=hw.devtools,
                           gpus_ready=hw.gpus_ready, cpu_tee=hw.cpu_tee, details=hw.details)
        return CCState(True, "emulated", f"CC_RUNTIME_EMULATE={emulate_setting}", mode="emulated",
                       profile=emulate_setting)
    if cc_setting == "1":
        return CCState(True, "env", "forced on by CC_RUNTIME_CC=1", mode="forced")
    if cc_setting == "0":
        return CCState(False, "env", "forced off by CC_RUNTIME_CC=0")
    return probe_nvml(pynvml)


_lock = threading.Lock()
_cached: CCState | None = None


def cc_state() -> CCState:
    """The process-wide state, computed once. Never raises: invalid settings read as 'off'."""
    global _cached
    with _lock:
        if _cached is None:
            try:
                _cached = resolve()
            except _settings.SettingsError as exc:
                _cached = CCState(False, "none", f"invalid setting, cc_runtime inactive: {exc}")
        return _cached


def set_state(state: CCState | None) -> None:
    """Replace (or with None, forget) the cached state. For tests and the emulator's context manager."""
    global _cached
    with _lock:
        _cached = state


def reset() -> None:
    set_state(None)
