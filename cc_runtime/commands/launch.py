"""``cc-runtime launch -- CMD ...``: run a command with cc_runtime active in all its Python processes."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("launch", help="run a command with cc_runtime active in all its Python processes")
    p.add_argument("--preflight", choices=("off", "warn", "require"), default=None,
                   help="run the host preflight checks (CC mode, DevTools, ready state, driver) before "
                        "starting CMD: require refuses to start it when one fails or is unknown; also "
                        "exported as CC_RUNTIME_PREFLIGHT to CMD's processes")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")


def launch_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that makes every Python child activate cc_runtime, installed or not."""
    from .. import settings

    env = dict(os.environ if base is None else base)
    settings.VARS["CC_RUNTIME_BOOTSTRAP"].parse("CC_RUNTIME_BOOTSTRAP", "1")
    env["CC_RUNTIME_BOOTSTRAP"] = "1"
    if "CC_RUNTIME_DECISION" not in env:
        decision = _decision(env)
        if decision is not None:
            # Off CC `import cc_runtime` exports no decision, yet here every Python child imports
            # cc_runtime: hand them this process's decision so none of them asks NVML again.
            env["CC_RUNTIME_DECISION"] = decision
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # The sitecustomize shim covers source-tree runs where the .pth is not installed; the package's
    # parent goes first too so `import cc_runtime` resolves to this copy in the child.
    extra = [os.path.join(here, "_launch"), os.path.dirname(here)]
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(extra + ([old] if old else []))
    return env


def _decision(env: dict[str, str]) -> str | None:
    """This process's CC decision as a child would inherit it; None when it cannot be made (an invalid
    setting: each child then reports it itself) or the child's own settings differ."""
    from .. import settings
    from ..detect import cc_state, to_decision

    state = cc_state()
    if state.details.get("invalid_settings"):
        return None
    # Made from this process's settings, so tagged with them: a child whose CC_RUNTIME_CC or
    # CC_RUNTIME_EMULATE differs (a sweep arm) decides for itself.
    cc, emulate = settings.raw("CC_RUNTIME_CC"), settings.raw("CC_RUNTIME_EMULATE")
    if (cc, emulate) != (settings.raw("CC_RUNTIME_CC", env), settings.raw("CC_RUNTIME_EMULATE", env)):
        return None
    return to_decision(state, cc, emulate)


def main(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("cc-runtime launch: give a command after --, e.g. cc-runtime launch -- python -m "
              "sglang.launch_server ...", file=sys.stderr)
        return 2
    env = launch_env()
    if args.preflight is not None:
        env["CC_RUNTIME_PREFLIGHT"] = args.preflight
        refused = _preflight(args.preflight)
        if refused:
            return refused
    import subprocess

    try:
        return subprocess.call(argv, env=env)
    except FileNotFoundError:
        print(f"cc-runtime launch: command not found: {argv[0]}", file=sys.stderr)
        return 127
    except KeyboardInterrupt:
        return 130


def _preflight(mode: str) -> int:
    """The host checks before CMD starts: non-zero (and one line) when ``require`` refuses."""
    if mode == "off":
        return 0
    from .. import preflight
    from ..detect import cc_state

    report = preflight.run(mode=mode, where="launch", state=cc_state(), host_only=True)
    preflight.remember(report)
    if mode == "require":
        line = report.refusal()
        if line:
            print(f"cc-runtime launch: not started: {line}", file=sys.stderr)
            return 1
        return 0
    for c in report.blocking("warn"):
        print(f"cc-runtime launch: WARNING: preflight {c.name} failed: {c.reason}", file=sys.stderr)
    return 0
