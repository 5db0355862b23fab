"""The host checks, through NVML: CC mode on every GPU, DevTools off, ready state set, a CC driver.

NVML reports CC mode for the whole system (``nvmlSystemGetConfComputeSettings`` / ``...State``, read by
:mod:`cc_runtime.detect`), not per GPU. Per GPU, ``nvmlDeviceGetConfComputeMemSizeInfo`` answers only
for a GPU in CC mode (its protected memory size) and ``NOT_SUPPORTED`` for one that is not, so a mix of
answers is a machine where some GPUs are not protected. Where a driver lacks that call, the system
answer stands alone and the evidence says so.
"""

from __future__ import annotations

from typing import Any

from . import Check

#: The first driver branch with CC: CUDA 12.2 (July 2023) was the first release with Confidential
#: Computing support for H100 (Edgeless Systems, "Nvidia Hopper H100"), and CUDA 12.2 shipped with driver
#: 535.54.03 (NVIDIA open-gpu-kernel-modules CHANGELOG, "Release 535 Entries"). No driver older than R535
#: can run CC on any GPU; Blackwell needs a newer branch, for which no single minimum is recorded here.
MIN_CC_DRIVER_MAJOR = 535
MIN_CC_DRIVER_SOURCE = ("CUDA 12.2 / driver R535 is the first release with CC (Edgeless Systems wiki, "
                        "'Nvidia Hopper H100'; open-gpu-kernel-modules CHANGELOG 535.54.03)")

NAMES = ("cc_mode", "devtools", "gpus_ready", "driver")


def _all(result: str, reason: str) -> list[Check]:
    return [Check(name, result, reason) for name in NAMES]


def checks(state: Any, pynvml: Any = None) -> list[Check]:
    """The four host checks for the CC decision ``state``."""
    if not state.enabled:
        return _all("not applicable", f"CC is off (source: {state.source}): there is no confidentiality to check")
    if state.source == "emulated":
        return _all("not applicable", f"emulated CC ({state.profile}): no CC hardware to check")
    from ..detect import probe_nvml

    hw = probe_nvml(pynvml)
    if hw.source == "none":  # no NVML here, or it failed: nothing can be proven
        return _all("unknown", f"cannot read the GPU's CC state: {hw.reason}")
    per_device = _per_device(pynvml)
    return [_cc_mode(state, hw, per_device), _devtools(hw), _ready(hw), _driver(pynvml)]


def _nvml(pynvml: Any) -> Any:
    if pynvml is not None:
        return pynvml
    from ..detect import _import_pynvml

    return _import_pynvml()


def _per_device(pynvml: Any) -> list[str] | str:
    """Per GPU: ``cc`` (protected memory reported), ``off`` (NOT_SUPPORTED) or ``unknown``; or why not read."""
    nv = _nvml(pynvml)
    if nv is None:
        return "nvidia-ml-py is not installed"
    fn = getattr(nv, "nvmlDeviceGetConfComputeMemSizeInfo", None)
    try:
        nv.nvmlInit()
    except Exception as exc:  # noqa: BLE001
        return f"NVML unavailable: {exc}"
    try:
        out: list[str] = []
        for i in range(int(nv.nvmlDeviceGetCount())):
            if fn is None:
                out.append("unknown")
                continue
            try:
                info = fn(nv.nvmlDeviceGetHandleByIndex(i))
                out.append("cc" if int(getattr(info, "protectedMemSizeKib", 0)) > 0 else "off")
            except Exception as exc:  # noqa: BLE001
                not_supported = getattr(nv, "NVMLError_NotSupported", None)
                out.append("off" if not_supported is not None and isinstance(exc, not_supported) else "unknown")
        return out
    except Exception as exc:  # noqa: BLE001
        return f"NVML device query failed: {type(exc).__name__}: {exc}"
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # noqa: BLE001,S110 - shutting down a library that failed is not news
            pass


def _cc_mode(state: Any, hw: Any, per_device: list[str] | str) -> Check:
    evidence: dict[str, Any] = {"system": hw.mode, "nvml": hw.reason, "per_gpu": per_device}
    if not hw.real:
        return Check("cc_mode", "fail", f"NVML says this machine is not in CC mode ({hw.reason}), but cc_runtime "
                     f"runs as if it were ({state.source}: {state.reason}): nothing is protected", evidence)
    if isinstance(per_device, str):
        return Check("cc_mode", "pass", f"system CC mode {hw.mode}; per-GPU state not read ({per_device})",
                     evidence)
    off = [i for i, s in enumerate(per_device) if s == "off"]
    if off:
        return Check("cc_mode", "fail", f"CC is on for the system but GPU(s) {off} of {len(per_device)} "
                     "report no protected memory: a mix of CC and non-CC GPUs", evidence)
    if not per_device:
        return Check("cc_mode", "fail", "NVML lists no GPU", evidence)
    unknown = [i for i, s in enumerate(per_device) if s == "unknown"]
    note = f"; per-GPU CC memory not readable for GPU(s) {unknown}" if unknown else ""
    return Check("cc_mode", "pass", f"system CC mode {hw.mode} on {len(per_device)} GPU(s){note}", evidence)


def _devtools(hw: Any) -> Check:
    if hw.devtools is None:
        return Check("devtools", "unknown", "NVML did not report DevTools mode")
    if hw.devtools:
        return Check("devtools", "fail", "DevTools mode is on: CC's data paths run but nothing is protected "
                     "(debugging and profiling are allowed)", {"devtools": True})
    return Check("devtools", "pass", "DevTools mode is off", {"devtools": False})


def _ready(hw: Any) -> Check:
    if hw.gpus_ready is None:
        return Check("gpus_ready", "unknown", "NVML did not report the GPUs' ready state")
    if not hw.gpus_ready:
        return Check("gpus_ready", "fail", "the GPUs' ready state is not set: attestation has not completed "
                     "(a verifier sets it on success; `nvidia-smi conf-compute -grs` shows it)",
                     {"gpus_ready": False})
    return Check("gpus_ready", "pass", "the GPUs' ready state is set", {"gpus_ready": True})


def _driver(pynvml: Any) -> Check:
    nv = _nvml(pynvml)
    try:
        nv.nvmlInit()
        try:
            raw = nv.nvmlSystemGetDriverVersion()
        finally:
            nv.nvmlShutdown()
        version = raw.decode() if isinstance(raw, bytes) else str(raw)
        major = int(version.split(".")[0])
    except Exception as exc:  # noqa: BLE001
        return Check("driver", "unknown", f"cannot read the driver version: {type(exc).__name__}: {exc}")
    evidence = {"driver": version, "minimum": f"{MIN_CC_DRIVER_MAJOR}", "source": MIN_CC_DRIVER_SOURCE}
    if major < MIN_CC_DRIVER_MAJOR:
        return Check("driver", "fail", f"driver {version} predates CC (R{MIN_CC_DRIVER_MAJOR} or newer needed)",
                     evidence)
    return Check("driver", "pass", f"driver {version} >= R{MIN_CC_DRIVER_MAJOR}", evidence)
