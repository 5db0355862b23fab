"""Per-process status files: what cc_runtime decided and did in every process of a running server.

SGLang's scheduler and detokenizer are spawned children whose log lines from cc_runtime are lost: they
activate at interpreter start (``.pth`` bootstrap), long before SGLang configures logging. With
``CC_RUNTIME_STATUS_DIR`` set, each process where cc_runtime is active (CC on, forced or emulated)
keeps ``<dir>/<pid>.json`` up to date: its role, the CC decision, the serving device, every patch's
status and reason, and warnings (e.g. ``SGLANG_FORCE_CONFIDENTIAL_COMPUTE=0`` set by the user while
cc_runtime wanted 1). ``cc-runtime status`` reads them. Off CC nothing is written and nothing here is
imported. The file holds no command line (it may carry API keys), no host name and no GPU UUID.

:func:`warn` also prints to stderr at once: a warning must reach a human even where logging is not
configured yet.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

__all__ = ["read_all", "role", "warn", "write"]

_lock = threading.Lock()
_warnings: list[str] = []
_write_error_reported = False


def role() -> str:
    """What this process is, without its arguments: ``-m`` module, multiprocessing target, or script."""
    mp = sys.modules.get("multiprocessing")
    if mp is not None:
        try:
            target = getattr(mp.current_process(), "_target", None)
        except Exception:  # noqa: BLE001
            target = None
        if target is not None:
            return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"
    argv = list(getattr(sys, "orig_argv", []) or [])
    if "-m" in argv[1:-1]:
        return argv[argv.index("-m", 1) + 1]
    if "-c" in argv[1:]:
        return "python -c"
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def _directory() -> str | None:
    """The status directory when this process should write one (CC enabled and a directory set)."""
    from . import detect, settings

    if not detect.cc_state().enabled:  # cached by activation, which always comes first
        return None
    try:
        return settings.get("CC_RUNTIME_STATUS_DIR")
    except settings.SettingsError:
        return None


def snapshot() -> dict[str, Any]:
    from . import detect, runtime
    from .patching.device import serving_device

    state = detect.cc_state()
    device, device_source = serving_device()
    patches: list[dict[str, Any]] = []
    if runtime._manager is not None:
        patches = [{"name": r.patch.name, "status": r.status, "reason": r.reason}
                   for r in runtime._manager.records.values()]
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "role": role(),
        "cc": {"label": state.label, "source": state.source, "reason": state.reason},
        "device": device,
        "device_source": device_source,
        "patches": patches,
        "warnings": list(_warnings),
        "preflight": _preflight(),
        "updated": time.time(),
    }


def _preflight() -> dict[str, Any] | None:
    """This process's last preflight (CC_RUNTIME_PREFLIGHT), results and reasons only."""
    from . import preflight

    last = preflight.last()
    if last is None:
        return None
    return {"mode": last["mode"], "where": last["where"], "ok": last["ok"],
            "checks": [{k: c[k] for k in ("name", "result", "reason")} for c in last["checks"]]}


def write() -> str | None:
    """Rewrite this process's status file (atomically); never raises. Returns the path written."""
    global _write_error_reported
    try:
        directory = _directory()
        if directory is None:
            return None
        with _lock:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            path = os.path.join(directory, f"{os.getpid()}.json")
            tmp = f"{path}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(snapshot(), f, indent=1, default=str)
            os.replace(tmp, path)
            return path
    except Exception as exc:  # noqa: BLE001 - status reporting must never break the server
        if not _write_error_reported:
            _write_error_reported = True
            print(f"cc_runtime: could not write its status file: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def warn(message: str) -> None:
    """A warning a human must see: stderr now (logging may not be configured yet) and the status file."""
    with _lock:
        if message in _warnings:
            return
        _warnings.append(message)
    print(message, file=sys.stderr, flush=True)
    write()


def warnings() -> list[str]:
    return list(_warnings)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_all(directory: str) -> list[dict[str, Any]]:
    """Every status file in ``directory`` (oldest first), each with ``alive`` added; unreadable files
    come back as ``{"file": ..., "error": ...}``."""
    out: list[dict[str, Any]] = []
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except FileNotFoundError:
        return out
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            data["alive"] = _alive(int(data["pid"]))
        except Exception as exc:  # noqa: BLE001 - one bad file must not hide the others
            data = {"file": name, "error": f"{type(exc).__name__}: {exc}"}
        out.append(data)
    out.sort(key=lambda d: (d.get("updated") or 0, d.get("pid") or 0))
    return out
