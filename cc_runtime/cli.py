"""``cc-runtime`` / ``python -m cc_runtime``: doctor, patches, launch, bench."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cc-runtime", description="NVIDIA Confidential Computing runtime fixes "
                                "for SGLang, FlashInfer, Triton and torch inductor.")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("doctor", help="environment report: GPU, driver, CC state, versions, patches")
    d.add_argument("--json", action="store_true", help="machine-readable output (same as cc_runtime.status())")
    pa = sub.add_parser("patches", help="every patch with its status and upstream status")
    pa.add_argument("--json", action="store_true")
    la = sub.add_parser("launch", help="run a command with cc_runtime active in all its Python processes")
    la.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    from .bench import add_bench_parser

    add_bench_parser(sub)
    from .calibrate import cli as calibrate_cli

    calibrate_cli.add_parser(sub)
    return p


def launch_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that makes every Python child activate cc_runtime, installed or not."""
    env = dict(os.environ if base is None else base)
    env["CC_RUNTIME_BOOTSTRAP"] = "1"
    here = os.path.dirname(os.path.abspath(__file__))
    # The sitecustomize shim covers source-tree runs where the .pth is not installed; the package's
    # parent goes first too so `import cc_runtime` resolves to this copy in the child.
    extra = [os.path.join(here, "_launch"), os.path.dirname(here)]
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(extra + ([old] if old else []))
    return env


def _launch(argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("cc-runtime launch: give a command after --, e.g. cc-runtime launch -- python -m "
              "sglang.launch_server ...", file=sys.stderr)
        return 2
    import subprocess

    try:
        return subprocess.call(argv, env=launch_env())
    except FileNotFoundError:
        print(f"cc-runtime launch: command not found: {argv[0]}", file=sys.stderr)
        return 127
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings.Settings.load()
    except settings.SettingsError as exc:
        print(f"cc-runtime: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "doctor":
        from .doctor import main_doctor

        return main_doctor(args.json)
    if args.cmd == "patches":
        from .doctor import render_patches
        from .runtime import manager

        data = manager().as_list()
        print(json.dumps(data, indent=2) if args.json else render_patches(data))
        return 0
    if args.cmd == "launch":
        return _launch(args.argv)
    if args.cmd == "bench":
        from .bench import main_bench

        return main_bench(args)
    if args.cmd == "calibrate":
        from .calibrate import cli as calibrate_cli

        return calibrate_cli.main(args)
    return 2
