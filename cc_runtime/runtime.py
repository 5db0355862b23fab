"""Process-wide activation: settings + CC state + patch manager, reachable from every entry path.

Entry paths: ``import cc_runtime`` (automatic), the SGLang plugin entry point, the ``.pth`` / ``.start``
bootstrap in spawned processes, ``cc-runtime launch``, and explicit ``cc_runtime.activate(...)``.

Rules every path shares:

* every setting is validated before anything changes: invalid -> the API raises ``SettingsError``;
  the automatic paths print one line and leave the process exactly as it was (no variable exported);
* activation is all-or-nothing: if it fails (strict mode, or a crash), every applied patch is
  reverted and every variable it exported (``CC_RUNTIME_*`` and upstream switches such as
  ``SGLANG_FORCE_CONFIDENTIAL_COMPUTE``) is restored before the error surfaces;
* off CC nothing heavy is imported: no patch modules, no wrapt, no importlib.metadata.
"""

from __future__ import annotations

import threading

from . import settings

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any

    from .detect import CCState
    from .patching import PatchManager

BOOTSTRAP_VAR = "CC_RUNTIME_BOOTSTRAP"
DECISION_VAR = "CC_RUNTIME_DECISION"
_ARG_VARS = {"cc": "CC_RUNTIME_CC", "emulate": "CC_RUNTIME_EMULATE", "patches": "CC_RUNTIME_PATCHES",
             "strict": "CC_RUNTIME_STRICT"}

_lock = threading.RLock()
_manager: PatchManager | None = None
#: The state and settings of the last successful activation (a lazily created manager reflects them).
_last: tuple[CCState, settings.Settings] | None = None
#: Why the last activation failed (rolled back), for status() and doctor.
_failure: str | None = None
#: The last message the automatic paths printed (the CLI does not print the same error twice).
reported_error: str | None = None
#: Values of the variables we exported, as they were before the first export (restored on rollback).
_saved_env: dict[str, str | None] | None = None


class StrictModeError(RuntimeError):
    """Activation failed in strict mode; everything was rolled back first."""

    cc_runtime_strict = True


def manager() -> PatchManager:
    """The patch manager (created on first use; it imports the patch modules)."""
    global _manager
    with _lock:
        if _manager is None:
            import logging

            from .patches import all_patches
            from .patching import PatchManager

            logging.getLogger("cc_runtime").addHandler(logging.NullHandler())
            _manager = PatchManager(all_patches())
            _manager.on_strict_failure = _strict_failure
            _manager.on_change = _write_status
            if _last is not None:
                _manager.activate(*_last)
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
    to the environment so spawned children (SGLang's scheduler and detokenizer) reach the same one
    without querying NVML again. Raises ``SettingsError`` (nothing changed) and, in strict mode,
    ``PatchError`` (everything rolled back).
    """
    args: dict[str, Any] = {"cc": cc, "emulate": emulate, "patches": patches, "strict": strict}
    with _lock:
        cfg = settings.Settings.load(None, **args)
        return _activate(cfg, args, propagate)


def _activate(cfg: settings.Settings, args: dict[str, Any], propagate: bool) -> CCState:
    global _last, _failure
    from . import detect

    if cfg.disable:
        state = detect.disabled_state()
        _rollback()
        detect.set_state(state)
        _last = (state, cfg)
        if _manager is not None:
            _manager.activate(state, cfg)
        return state
    if args["cc"] is not None or args["emulate"] is not None:
        state = detect.resolve(cc=args["cc"], emulate=args["emulate"])
    else:
        state = detect.cc_state()
        if state.details.get("invalid_settings"):  # settings were fixed since: decide afresh
            detect.reset()
            state = detect.cc_state()
    try:
        detect.set_state(state)
        if propagate:
            _export(state, args)
        _last = (state, cfg)
        if _manager is not None:
            _manager.activate(state, cfg)
        elif state.enabled:
            manager()
        _failure = None
        if state.enabled:
            _write_status()
    except BaseException as exc:
        _failure = f"{type(exc).__name__}: {exc}"
        _rollback()
        raise
    return state


def _export(state: CCState, args: dict[str, Any]) -> None:
    global _saved_env
    from .detect import to_decision

    names = [BOOTSTRAP_VAR, DECISION_VAR] + [_ARG_VARS[k] for k, v in args.items() if v is not None]
    saved = settings.snapshot(names)
    _saved_env = {**saved, **(_saved_env or {})}  # keep what was there before our first export
    for key, value in args.items():
        if value is not None:
            settings.export(_ARG_VARS[key], ("1" if value else "0") if isinstance(value, bool) else str(value))
    if state.enabled:
        settings.export(BOOTSTRAP_VAR, "1")
        settings.export(DECISION_VAR, to_decision(state, settings.raw("CC_RUNTIME_CC"),
                                                  settings.raw("CC_RUNTIME_EMULATE")))
    else:
        # Off CC the children have nothing to patch, so `import cc_runtime` exports nothing: without
        # the gate they never import cc_runtime (no start-up cost in every Python child). A gate or a
        # decision this process exported for an earlier CC state goes back to what it was before.
        settings.restore({n: _saved_env[n] for n in (BOOTSTRAP_VAR, DECISION_VAR)})


def _write_status() -> None:
    """This process's status file, where ``CC_RUNTIME_STATUS_DIR`` asks for one (CC enabled only)."""
    from .status_file import write

    write()


def _strict_failure(message: str) -> None:
    """The manager rolled back after a strict-mode failure (possibly long after activation, when a
    waiting patch's module was imported): restore our exports too and remember why."""
    global _failure
    _failure = f"PatchError: {message}"
    _restore_env()


def _restore_env() -> None:
    global _saved_env
    if _saved_env is not None:
        settings.restore(_saved_env)
        _saved_env = None


def _rollback() -> list[BaseException]:
    """Revert every applied patch (their exported switches included) and our own exports."""
    errors: list[BaseException] = []
    if _manager is not None:
        errors = _manager.revert_all()
    _restore_env()
    return errors


def deactivate() -> None:
    """Revert every applied patch, restoring the original objects and every exported variable."""
    with _lock:
        for err in _rollback():
            _report_error(f"cc_runtime: error while reverting: {err}")


def describe() -> dict[str, Any]:
    """Activation facts for status(): the last failure and every setting with its source."""
    with _lock:
        out: dict[str, Any] = {"failure": _failure}
        try:
            cfg = _last[1] if _last is not None else settings.Settings.load()
            out["settings"] = cfg.describe()
        except settings.SettingsError as exc:
            out["settings_error"] = str(exc)
        return out


def auto_activate() -> None:
    """The activation used by ``import cc_runtime``, the SGLang plugin and the bootstrap paths.

    Never raises, except in strict mode (after rolling everything back). Invalid settings: one line,
    nothing changed.
    """
    try:
        with _lock:
            cfg = settings.Settings.load()
            if cfg.source("CC_RUNTIME_LOG_LEVEL") != "default":
                import logging

                logging.getLogger("cc_runtime").setLevel(cfg.log_level)
            state = _activate(cfg, dict.fromkeys(_ARG_VARS), propagate=True)
            _preflight(state, cfg, "startup")
    except settings.SettingsError as exc:
        from . import detect

        # Nothing exported, nothing patched; cc_state()/status() say why cc_runtime is inactive.
        detect.set_state(detect.CCState(False, "none", f"invalid setting, cc_runtime inactive: {exc}",
                                        details={"invalid_settings": True}))
        _report_error(f"cc_runtime: {exc}; cc_runtime leaves this process untouched")
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "cc_runtime_refused", False):
            raise  # the preflight refused: rolled back and reported already
        strict = _last_strict()
        what = "strict mode: activation failed" if strict else "activation failed"
        _report_error(f"cc_runtime: {what}, everything rolled back: {type(exc).__name__}: {exc}")
        if strict:
            raise StrictModeError(f"cc_runtime {what}: {exc}") from exc


def _is_cli_process() -> bool:
    """Whether this process is the ``cc-runtime`` command (console script or ``python -m cc_runtime``):
    the tool a refused deployment is diagnosed with is never stopped by the preflight itself."""
    import os
    import sys

    orig = list(getattr(sys, "orig_argv", []))
    if "-m" in orig and orig.index("-m") + 1 < len(orig) and orig[orig.index("-m") + 1] == "cc_runtime":
        return True
    return os.path.basename(sys.argv[0] if sys.argv else "") == "cc-runtime"


def _preflight(state: CCState, cfg: settings.Settings, where: str) -> None:
    """Run the automatic preflight for this process (only under CC, only where the setting asks).

    ``require`` and a failed or unknown check: everything applied is rolled back, the one line is
    reported, and :class:`cc_runtime.preflight.PreflightRefused` is raised."""
    global _failure
    if not state.enabled or cfg.preflight == "off" or _is_cli_process():
        return
    from . import preflight, status_file

    try:
        preflight.gate(state, cfg.preflight, where)
    except preflight.PreflightRefused as exc:
        _failure = str(exc)
        _rollback()
        _report_error(str(exc))
        status_file.write()  # why this rank ended stays readable from outside (cc-runtime status)
        raise
    status_file.write()


def preflight_here(where: str) -> None:
    """The automatic preflight at a later point of this process (the SGLang plugin: ``sglang``)."""
    with _lock:
        if _last is None:
            return
        _preflight(_last[0], _last[1], where)


def warn_once(message: str) -> None:
    """One WARNING line per distinct message in this process (see :func:`cc_runtime.visible.emit`)."""
    import logging

    from .visible import emit

    with _lock:
        if message in _warned:
            return
        _warned.add(message)
    emit(logging.getLogger("cc_runtime"), logging.WARNING, message)


_warned: set[str] = set()


def _last_strict() -> bool:
    try:
        return bool(settings.get("CC_RUNTIME_STRICT"))
    except settings.SettingsError:
        return False


def _report_error(message: str) -> None:
    """Log, and make sure a human sees it even when the application configured no logging at all
    (our NullHandler would otherwise swallow it, and a misconfigured deployment must not fail silently)."""
    global reported_error
    if message == reported_error:
        return  # e.g. the SGLang plugin activating again after `import cc_runtime` reported it
    import logging

    from .visible import handled

    reported_error = message
    log = logging.getLogger("cc_runtime")
    if handled(log):
        log.error(message)
        return
    import sys

    print(message, file=sys.stderr)  # once: not also through logging's last-resort handler


def _reset_for_tests() -> None:
    """Revert everything and forget the manager, the cached CC state and the last activation."""
    global _manager, _last, _failure
    with _lock:
        deactivate()
        _manager = None
        _last = None
        _failure = None
        _warned.clear()
        from . import detect, preflight

        detect.reset()
        preflight._reset_for_tests()
