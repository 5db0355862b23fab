"""``cc-runtime`` / ``python -m cc_runtime``: one subcommand per entry of :data:`COMMANDS`.

A subcommand is a module with ``add_parser(sub)`` (adds its argparse subparser, named as the entry) and
``main(args) -> int``. Every command validates all settings first: an invalid one is printed once
(``import cc_runtime`` may already have printed it) and the exit code is 2. A command whose module sets
``REPORTS_INVALID_SETTINGS`` (the doctor) still runs first, so the environment it is asked to diagnose
gets its report (the invalid setting in it) instead of only the one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__, settings
from .commands.launch import launch_env

__all__ = ["COMMANDS", "launch_env", "main"]

#: command name -> module with ``add_parser(sub)`` and ``main(args)``.
COMMANDS: dict[str, str] = {
    "doctor": "cc_runtime.doctor",
    "patches": "cc_runtime.commands.patches",
    "status": "cc_runtime.commands.status",
    "launch": "cc_runtime.commands.launch",
    "install-bootstrap": "cc_runtime.commands.install_bootstrap",
    "preflight": "cc_runtime.commands.preflight",
    "bench": "cc_runtime.bench",
    "calibrate": "cc_runtime.calibrate.cli",
    "sweep": "cc_runtime.sweep.cli",
    "upstream": "cc_runtime.commands.upstream",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cc-runtime", description="NVIDIA Confidential Computing runtime fixes "
                                "for SGLang, FlashInfer, Triton and torch inductor.")
    p.add_argument("--version", action="version", version=f"cc-runtime {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for modname in COMMANDS.values():
        importlib.import_module(modname).add_parser(sub)
    return p


def _error(exc: BaseException) -> int:
    from . import runtime

    message = str(exc)
    if not (runtime.reported_error and message in runtime.reported_error):
        print(f"cc-runtime: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings.Settings.load()
    except settings.SettingsError as exc:
        module = importlib.import_module(COMMANDS[args.cmd])
        if getattr(module, "REPORTS_INVALID_SETTINGS", False):
            module.main(args)
        return _error(exc)
    try:
        return int(importlib.import_module(COMMANDS[args.cmd]).main(args) or 0)
    except settings.SettingsError as exc:
        return _error(exc)
    except KeyboardInterrupt:
        return 130
