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
    info: dict[str, Any] = {"nvml": None, "driver": None, "driver_cuda": None, "devices": [], "torch_cuda": None}
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            drv = pynvml.nvmlSystemGetDriverVersion()
            info["driver"] = drv.decode() if isinstance(drv, bytes) else drv
            try:  # the CUDA version the driver supports, e.g. 12080 -> "12.8"
                v = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
                info["driver_cuda"] = f"{v // 1000}.{v % 1000 // 10}"
            except Exception:  # noqa: BLE001 - older nvidia-ml-py
                pass
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
        from .upstream.links import annotate

        return annotate(manager().as_list())
    except Exception as exc:  # noqa: BLE001
        return [{"name": "?", "target": "?", "status": "error", "reason": str(exc), "upstream": ""}]


def _activation() -> dict[str, Any]:
    try:
        from .runtime import describe

        return describe()
    except Exception as exc:  # noqa: BLE001
        return {"failure": None, "settings_error": f"error: {exc}"}


def _bootstrap() -> dict[str, Any]:
    try:
        from .commands.install_bootstrap import info

        return info()
    except Exception as exc:  # noqa: BLE001
        return {"installed": False, "path": None, "fix": f"could not check: {exc}"}


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


def _preflight() -> dict[str, Any] | None:
    """The last preflight of this process; without one, the checks run now (no attestation)."""
    try:
        from . import preflight

        last = preflight.last()
        if last is not None:
            return last
        report = preflight.run(mode="warn", where="doctor", import_detectors=False).as_dict()
        return report
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}


def collect() -> dict[str, Any]:
    gpu = _gpu()
    activation = _activation()
    return {
        "cc": _cc(),
        "activation": {"failure": activation.get("failure"), "settings_error": activation.get("settings_error")},
        "versions": _versions(),
        "gpu": gpu,
        "timer": _timer(gpu),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "executable": sys.executable},
        "settings": activation.get("settings", {}),
        "bootstrap": _bootstrap(),
        "patches": _patches(),
        "preflight": _preflight(),
    }


def _width() -> int:
    import shutil

    return max(80, min(shutil.get_terminal_size((120, 24)).columns, 140))


def _wrap(text: str, first: str, indent: int, width: int | None = None) -> list[str]:
    """``first`` + text wrapped to the terminal, continuation lines indented (never cut)."""
    import textwrap

    width = width or _width()
    lines = textwrap.wrap(str(text), width=max(30, width - indent), break_long_words=True,
                          break_on_hyphens=False) or [""]
    return [first.ljust(indent) + lines[0]] + [" " * indent + ln for ln in lines[1:]]


def show_setting(name: str, entry: dict[str, Any]) -> str:
    """A setting as the README writes it: ``*``, ``off``, ``0|1``, ``unset``; then its source."""
    from .settings import VARS

    value, source = entry.get("value"), entry.get("source")
    var = VARS.get(name)
    if source == "default" and var is not None:
        text = var.default or "unset"
    elif isinstance(value, bool):
        text = "1" if value else "0"
    elif value is None:
        text = {"CC_RUNTIME_PATCHES": "*", "CC_RUNTIME_EMULATE": "off"}.get(name, "unset")
    elif isinstance(value, list):
        text = ",".join(map(str, value))
    elif isinstance(value, dict):
        text = f"{'on' if value.get('enabled') else 'off'} ({value.get('source')}: {value.get('reason')})"
    else:
        text = str(value)
    return f"{text}  [{source}]"


def _torch_cuda(cuda: Any) -> str:
    if cuda is None:
        return "torch not installed"
    if not isinstance(cuda, dict):
        return str(cuda)
    built = f"CUDA {cuda.get('cuda_version')}" if cuda.get("cuda_version") else "CPU-only build (no CUDA)"
    if cuda.get("available"):
        return f"available, {built}, device 0: {cuda.get('device')}"
    return f"not available ({built})"


def render(report: dict[str, Any]) -> str:
    cc = report["cc"]
    col = 14
    lines = ["cc_runtime doctor"]
    lines += _wrap(f"{cc.get('label')} (source: {cc.get('source')}) {cc.get('reason')}", "  CC:", col)
    for key in ("mode", "environment", "multi_gpu_mode", "devtools", "gpus_ready", "cpu_tee"):
        if cc.get(key) not in (None, "off"):
            lines.append(f"    {key}: {cc.get(key)}")
    act = report.get("activation") or {}
    if act.get("failure"):
        lines += _wrap(f"FAILED, everything rolled back: {act['failure']}", "  activation:", col)
    if act.get("settings_error"):
        lines += _wrap(f"INVALID SETTING: {act['settings_error']}", "  settings:", col)
    gpu = report["gpu"]
    lines += _wrap(str(gpu.get("nvml")), "  NVML:", col)
    driver = gpu.get("driver") or ("unknown (NVML unavailable)" if gpu.get("nvml") != "ok" else "unknown")
    if gpu.get("driver_cuda"):
        driver += f" (supports CUDA {gpu['driver_cuda']})"
    lines.append(f"{'  driver:':<{col}}{driver}")
    lines.append(f"{'  GPUs:':<{col}}{', '.join(gpu.get('devices') or []) or 'none'}")
    lines += _wrap(_torch_cuda(gpu.get("torch_cuda")), "  torch.cuda:", col)
    if report.get("timer"):
        lines += _wrap(str(report["timer"]), "  timer:", col)
    boot = report.get("bootstrap") or {}
    if boot.get("installed"):
        lines.append(f"{'  bootstrap:':<{col}}installed ({boot.get('path')})")
    else:
        lines += _wrap(f"WARNING: not installed in this interpreter (expected {boot.get('expected_path')}); "
                       f"{boot.get('fix')}", "  bootstrap:", col)
    lines.append("  versions:")
    for k, v in report["versions"].items():
        lines.append(f"    {k:<18} {v or 'not installed'}")
    lines.append("  settings (value [source: argument | env | default]):")
    for k, v in (report.get("settings") or {}).items():
        lines += _wrap(show_setting(k, v), f"    {k}", 42)
    lines.append("  patches:")
    lines.append(render_patches(report["patches"], indent="    ", upstream=False))
    pre = report.get("preflight") or {}
    lines.append(f"  preflight ({pre.get('where', '?')}; `cc-runtime preflight` runs it):")
    if pre.get("error"):
        lines.append(f"    error: {pre['error']}")
    for c in pre.get("checks", []):
        lines += _wrap(f"{c['result']}: {c['reason']}", f"    {c['name']}", 18)
    return "\n".join(lines)


def render_patches(patches: list[dict[str, Any]], indent: str = "", upstream: bool = True) -> str:
    """Name, target, status, then the reason, the upstream status and the evidence level, wrapped (never cut)."""
    if not patches:
        return indent + "(none)"
    w_name = max(len("patch"), *(len(str(p["name"])) for p in patches))
    w_target = max(len("target"), *(len(str(p["target"])) for p in patches))
    w_status = max(len("status"), *(len(str(p["status"])) for p in patches))
    head = f"{indent}{'patch':<{w_name}}  {'target':<{w_target}}  {'status':<{w_status}}  reason / upstream / verified on"
    out = [head]
    col = len(indent) + w_name + w_target + w_status + 6
    for p in patches:
        first = f"{indent}{p['name']:<{w_name}}  {p['target']:<{w_target}}  {p['status']:<{w_status}}  "
        out += _wrap(str(p["reason"]), first, col)
        if upstream and p.get("upstream"):
            out += _wrap(f"upstream: {p['upstream']}", "", col)
        level = (p.get("evidence") or {}).get("level")
        if level:
            out += _wrap(f"verified on: {level}", "", col)
        if upstream and p.get("staged_pr"):
            out += _wrap(f"staged PR: {p['staged_pr']} (cc-runtime upstream export {p['staged_pr']})", "", col)
        elif upstream and p.get("not_staged"):
            out += _wrap(f"no staged PR: {p['not_staged']}", "", col)
        if p.get("stale"):
            out += _wrap(f"WARNING {p['stale']}", "", col)
    return "\n".join(out)


def main_doctor(as_json: bool) -> int:
    report = collect()
    print(json.dumps(report, indent=2, default=str) if as_json else render(report))
    return 0


#: ``cc-runtime doctor`` reports an invalid setting (and then exits 2) instead of refusing to run.
REPORTS_INVALID_SETTINGS = True


def add_parser(sub: Any) -> None:
    d = sub.add_parser("doctor", help="environment report: GPU, driver, CC state, settings, bootstrap, patches")
    d.add_argument("--json", action="store_true", help="machine-readable output (same as cc_runtime.status())")


def main(args: Any) -> int:
    return main_doctor(args.json)
