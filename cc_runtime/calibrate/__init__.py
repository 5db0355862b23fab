"""``cc-runtime calibrate``: measure a CC profile on this machine, with its own methods.

Runs on a CUDA GPU (real CC, CC off, or under the emulator) or on the simulated device (CPU; the
result says "simulated"). Every value is timed from the host (:mod:`.measurements`); nothing is read
from the emulator's cost model, so a calibrated profile can check the emulator (``cc-runtime bench
emulator --against PROFILE.json``). The output is a profile JSON that ``CC_RUNTIME_EMULATE`` accepts
as is, with ``provenance`` (GPU model, driver, CC state, versions, date; no hostname, serial, UUID or
path), each value's ``spread`` and the raw ``measurements``.

- :mod:`.targets`: the device operations calibrate needs (CUDA, simulated device).
- :mod:`.measurements`: the measurements. :mod:`.derive`: profile fields and comparisons from them.
- :mod:`.cli`: the subcommand.
"""

from __future__ import annotations

import datetime as _dt
import platform
from collections.abc import Callable, Iterable
from typing import Any

from .derive import compare, derive_profile, summarize
from .measurements import FULL, QUICK, Plan, measure, paired_launches
from .targets import CudaTarget, SimTarget, Target

__all__ = ["FULL", "QUICK", "CudaTarget", "Plan", "SimTarget", "Target", "calibrate", "compare", "derive_profile",
           "measure", "provenance", "summarize"]

Progress = Callable[[Iterable[Any], str], Iterable[Any]]


def provenance(target: Target, plan_name: str, *, sim_profile: str | None = None) -> dict[str, Any]:
    """Where and how a profile was measured: nothing that identifies the machine or its owner."""
    from .. import __version__
    from ..detect import cc_state

    out: dict[str, Any] = {
        "tool": "cc-runtime calibrate",
        "cc_runtime": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).date().isoformat(),
        "device_kind": target.kind,
        "simulated": target.kind == "simulated",
        "plan": plan_name,
        "python": platform.python_version(),
    }
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda_runtime"] = torch.version.cuda
    except Exception:  # noqa: BLE001
        pass
    if target.kind == "simulated":
        out["gpu"] = "simulated device (CPU threads)"
        out["simulated_profile"] = sim_profile
        out["cc_state"] = f"simulated:{sim_profile}"
        return out
    import torch

    out["gpu"] = torch.cuda.get_device_name(getattr(target, "index", 0))
    state = cc_state()
    out["cc_state"] = state.label
    out["cc_mode"] = state.mode
    out["cc_devtools"] = state.devtools
    out["cc_multi_gpu_mode"] = state.multi_gpu_mode
    from ..doctor import _gpu  # the driver as doctor reports it (NVML), one query in one place

    gpu = _gpu()
    out["driver"], out["driver_cuda"] = gpu.get("driver"), gpu.get("driver_cuda")
    try:
        import importlib.metadata

        out["cuda_python"] = importlib.metadata.version("cuda-python")
    except Exception:  # noqa: BLE001
        out["cuda_python"] = None
    return out


def calibrate(device: str = "cpu", *, quick: bool = True, sim_profile: str = "h100",
              baseline: dict[str, Any] | None = None, name: str | None = None, seed: int = 0,
              progress: Progress | None = None) -> dict[str, Any]:
    """Measure and return a profile JSON (a dict). ``device``: ``cpu`` (the simulated device playing
    ``sim_profile``), ``cuda`` or ``cuda:N``. ``baseline``: a CC-off profile's ``measurements``."""
    from ..emulator import load_profile

    plan, plan_name = (QUICK, "quick") if quick else (FULL, "full")
    if device == "cpu":
        prof = load_profile(sim_profile)
        target: Target = SimTarget(prof, seed=seed)
        cc = prof.cc
        method = f"simulated device playing {prof.name}"
        note = "the simulated CC-off device, bursts interleaved with the CC device's"
        off: Target | None = SimTarget(None, seed=seed) if cc and baseline is None else None
        pname = name or f"calibrated-sim-{prof.name}"
        prov_profile: str | None = prof.name
    else:
        from ..detect import cc_state

        index = int(device.split(":", 1)[1]) if ":" in device else 0
        target = CudaTarget(index)
        state = cc_state()
        cc = bool(state.real or state.source == "emulated")
        method = f"cuda, CC {state.label}"
        note = "the --baseline profile"
        pname = name or "calibrated"
        prov_profile = None
        off = None
    paired = None
    try:
        meas = measure(target, plan, progress, label=method)
        if off is not None:
            paired = paired_launches(off, target, plan)
        prov = provenance(target, plan_name, sim_profile=prov_profile)
    finally:
        target.close()
        if off is not None:
            off.close()
    return derive_profile(meas, name=pname, cc=cc, method=method, baseline=baseline if cc else None,
                          baseline_note=note, provenance=prov, paired=paired)
