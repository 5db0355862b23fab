"""``cc-runtime doctor``: an environment report that always prints.

In the spirit of ``torch.utils.collect_env`` and FlashInfer's ``collect_env.py``: every probe is
guarded, so a broken torch, a missing driver or an old nvidia-ml-py shows up as a line in the report
instead of a traceback. Versions come from package metadata (no imports), so even a torch that fails
to import gets its version reported.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
from typing import Any

DISTRIBUTIONS = ("torch", "triton", "flashinfer-python", "sglang", "cuda-python", "nvidia-ml-py", "wrapt",
                 "packaging")


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "cc-runtime": None}
    try:
        from . import __version__

        out["cc-runtime"] = __version__
    except Exception:  # noqa: BLE001
        pass
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except Exception:  # noqa: BLE001
            out[dist] = None
    return out


def _gpu() -> dict[str, Any]:
    info: dict[str, Any] = {"nvml": None, "driver": None, "devices": [], "torch_cuda": None}
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            drv = pynvml.nvmlSystemGetDriverVersion()
            info["driver"] = drv.decode() if isinstance(drv, bytes) else drv
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                info["devices"].append(name.decode() if isinstance(name, bytes) else name)
            info["nvml"] = "ok"
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001
        info["nvml"] = f"unavailable: {type(exc).__name__}: {exc}"
    if "torch" in sys.modules or _importable("torch"):
        try:
            import torch

            info["torch_cuda"] = {
                "available": bool(torch.cuda.is_available()),
                "cuda_version": torch.version.cuda,
                "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            }
        except Exception as exc:  # noqa: BLE001
            info["torch_cuda"] = f"torch broken: {type(exc).__name__}: {exc}"
    return info


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except Exception:  # noqa: BLE001
        return False


def _cc() -> dict[str, Any]:
    try:
        from .detect import cc_state

        return cc_state().as_dict()
    except Exception as exc:  # noqa: BLE001
        return {"enabled": False, "source": "none", "reason": f"detection crashed: {exc}", "label": "off"}


def _patches() -> list[dict[str, Any]]:
    try:
        from .runtime import manager

        return manager().as_list()
    except Exception as exc:  # noqa: BLE001
        return [{"name": "?", "target": "?", "status": "error", "reason": str(exc), "upstream": ""}]


def _settings() -> dict[str, Any]:
    import os

    from .settings import VARS, SettingsError, get

    out: dict[str, Any] = {}
    for name in VARS:
        try:
            value = get(name)
            out[name] = sorted(value) if isinstance(value, frozenset) else value
        except SettingsError as exc:
            out[name] = f"INVALID: {exc}"
        except Exception as exc:  # noqa: BLE001
            out[name] = f"error: {exc}"
        if name in os.environ:
            out[name + " (raw)"] = os.environ[name]
    return out


def _timer(gpu: dict[str, Any]) -> dict[str, Any] | None:
    """Which kernel timer autotuners get here, with its self-test (GPU only: it launches stamp kernels)."""
    cuda = gpu.get("torch_cuda")
    if not (isinstance(cuda, dict) and cuda.get("available")):
        return None
    try:
        from .timer import failures, get_timer

        return {**get_timer().describe(), "failures": failures()}
    except Exception as exc:  # noqa: BLE001
        return {"timer": None, "error": f"{type(exc).__name__}: {exc}"}


def collect() -> dict[str, Any]:
    gpu = _gpu()
    return {
        "cc": _cc(),
        "versions": _versions(),
        "gpu": gpu,
        "timer": _timer(gpu),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "executable": sys.executable},
        "settings": _settings(),
        "patches": _patches(),
    }


def render(report: dict[str, Any]) -> str:
    cc = report["cc"]
    lines = [
        "cc_runtime doctor",
        f"  CC:        {cc.get('label')} (source: {cc.get('source')}; {cc.get('reason')})",
    ]
    for key in ("mode", "environment", "multi_gpu_mode", "devtools", "gpus_ready", "cpu_tee"):
        if cc.get(key) not in (None, "off"):
            lines.append(f"    {key}: {cc.get(key)}")
    gpu = report["gpu"]
    lines.append(f"  NVML:      {gpu.get('nvml')}")
    lines.append(f"  driver:    {gpu.get('driver')}")
    lines.append(f"  GPUs:      {', '.join(gpu.get('devices') or []) or 'none'}")
    lines.append(f"  torch.cuda: {gpu.get('torch_cuda')}")
    if report.get("timer"):
        lines.append(f"  kernel timer: {report['timer']}")
    lines.append("  versions:")
    for k, v in report["versions"].items():
        lines.append(f"    {k:<18} {v or 'not installed'}")
    lines.append("  settings:")
    for k, v in report["settings"].items():
        lines.append(f"    {k:<32} {v}")
    lines.append("  patches:")
    lines.append(render_patches(report["patches"], indent="    "))
    return "\n".join(lines)


def render_patches(patches: list[dict[str, Any]], indent: str = "") -> str:
    rows = [("patch", "target", "status", "reason", "verified on", "upstream")]
    for p in patches:
        level = (p.get("evidence") or {}).get("level", "none")
        rows.append((p["name"], p["target"], p["status"], p["reason"], level, p["upstream"]))
    widths = [min(max(len(str(r[i])) for r in rows), 48) for i in range(5)]
    out = []
    for r in rows:
        cells = [str(c)[:w].ljust(w) for c, w in zip(r[:5], widths, strict=False)] + [str(r[5])]
        out.append(indent + "  ".join(cells))
    return "\n".join(out)


def main_doctor(as_json: bool) -> int:
    report = collect()
    print(json.dumps(report, indent=2, default=str) if as_json else render(report))
    return 0
