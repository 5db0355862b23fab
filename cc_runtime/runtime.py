"""Process-wide activation: settings + CC state + patch manager, reachable from every entry path.

Entry paths: ``import cc_runtime`` (automatic), the SGLang plugin entry point, the ``.pth`` / ``.start``
bootstrap in spawned processes, ``cc-runtime launch``, and explicit ``cc_runtime.activate(...)``.
The automatic paths never raise (an invalid setting is logged and the process left untouched); the
explicit API raises ``SettingsError``, and in strict mode ``PatchError``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from . import detect, settings
from .detect import CCState
from .patching import PatchManager

log = logging.getLogger("cc_runtime")

BOOTSTRAP_VAR = "CC_RUNTIME_BOOTSTRAP"

_lock = threading.RLock()
_manager: PatchManager | None = None


def manager() -> PatchManager:
    global _manager
    with _lock:
        if _manager is None:
            from .patches import all_patches

            _manager = PatchManager(all_patches())
        return _manager


def activate(
    *,
    cc: str | None = None,
    emulate: str | None = None,
    patches: str | None = None,
    strict: bool | None = None,
    propagate: bool = True,
) -> CCState:
    """Detect CC and apply the patches that fit it. Idempotent; safe to call from any thread.

    Explicit arguments win over ``CC_RUNTIME_*`` variables. With ``propagate`` the decision is written
    to the environment so spawned children (SGLang's scheduler and detokenizer) reach the same one.
    """
    with _lock:
        overrides: dict[str, Any] = {"cc": cc, "emulate": emulate, "patches": patches, "strict": strict}
        cfg = settings.Settings.load(**overrides)
        if cfg.disable:
            log.info("cc_runtime: disabled by CC_RUNTIME_DISABLE=1")
            return CCState(False, "env", "disabled by CC_RUNTIME_DISABLE=1")
        if cc is not None or emulate is not None:
            state = detect.resolve(cc=cc, emulate=emulate)
            detect.set_state(state)
        else:
            state = detect.cc_state()
        if propagate:
            _propagate(cc=cc, emulate=emulate, patches=patches, strict=strict)
        manager().activate(state, cfg)
        return state


def _propagate(**explicit: Any) -> None:
    env_names = {"cc": "CC_RUNTIME_CC", "emulate": "CC_RUNTIME_EMULATE", "patches": "CC_RUNTIME_PATCHES",
                 "strict": "CC_RUNTIME_STRICT"}
    for key, value in explicit.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "1" if value else "0"
        os.environ[env_names[key]] = str(value)
    os.environ[BOOTSTRAP_VAR] = "1"


def deactivate() -> None:
    """Revert every applied patch, restoring the original objects; children are no longer bootstrapped."""
    with _lock:
        if _manager is not None:
            errors = _manager.revert_all()
            for err in errors:
                log.error("cc_runtime: error while reverting: %s", err)
        os.environ.pop(BOOTSTRAP_VAR, None)


def auto_activate() -> None:
    """The never-raising activation used by ``import cc_runtime`` and the bootstrap paths."""
    try:
        activate()
    except settings.SettingsError as exc:
        _report_error(f"cc_runtime: {exc}; cc_runtime leaves this process untouched")
    except Exception as exc:  # noqa: BLE001
        strict = os.environ.get("CC_RUNTIME_STRICT") == "1"
        if strict:
            raise
        _report_error(f"cc_runtime: activation failed, continuing without it: {type(exc).__name__}: {exc}")


def _report_error(message: str) -> None:
    """Log, and make sure a human sees it even when the application configured no logging at all
    (our NullHandler would otherwise swallow it, and a misconfigured deployment must not fail silently)."""
    log.error(message)
    logger: logging.Logger | None = log
    while logger is not None:
        if any(not isinstance(h, logging.NullHandler) for h in logger.handlers):
            return
        logger = logger.parent if logger.propagate else None
    import sys

    print(message, file=sys.stderr)


def _reset_for_tests() -> None:
    """Revert everything and forget the manager and the cached CC state."""
    global _manager
    with _lock:
        deactivate()
        _manager = None
        detect.reset()
