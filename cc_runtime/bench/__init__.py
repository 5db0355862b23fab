"""``cc-runtime bench``: one subcommand per benchmark; no subcommand runs all of them quickly.

A benchmark module defines ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(ctx) -> BenchResult``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from typing import Any

from .common import (
    BenchContext,
    BenchResult,
    default_device,
    environment,
    format_table,
    print_table,
    write_json,
)

BENCHMARKS: dict[str, str] = {
    "emulator": "cc_runtime.bench.emulator",
    "timer": "cc_runtime.bench.timer",
    "readback": "cc_runtime.bench.readback",
    "prefill": "cc_runtime.bench.prefill",
    "startup": "cc_runtime.bench.startup",
}

__all__ = ["BENCHMARKS", "BenchContext", "BenchResult", "add_bench_parser", "environment", "main_bench",
           "print_table", "write_json"]


def _load(name: str) -> Any | None:
    try:
        return importlib.import_module(BENCHMARKS[name])
    except ModuleNotFoundError as exc:
        if exc.name == BENCHMARKS[name]:
            return None
        raise


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small sweep (seconds, not minutes)")
    p.add_argument("--long", action="store_true", help="long mode (soak tests where the benchmark has one)")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write the result JSON here")
    p.add_argument("--plot", dest="plot_path", metavar="PNG", help="write a plot here (where one helps)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="cuda (default when present) or cpu (the emulator's simulated device)")
    p.add_argument("--emulate", default="h100", metavar="PROFILE",
                   help="CC profile for the emulated arms: h100, b300 or a JSON file (default h100)")
    p.add_argument("--seed", type=int, default=0)


def add_bench_parser(sub: Any) -> None:
    b = sub.add_parser("bench", help="micro-benchmarks (no name: all of them, quick, one summary table)")
    _common_args(b)
    bsub = b.add_subparsers(dest="bench_name")
    for name, _modname in BENCHMARKS.items():
        desc = ""
        try:
            mod = _load(name)
            desc = getattr(mod, "DESCRIPTION", "") if mod else "(not available in this build)"
        except Exception as exc:  # noqa: BLE001
            mod, desc = None, f"(broken: {exc})"
        sp = bsub.add_parser(name, help=desc.replace("%", "%%"))  # argparse %-formats help ("%globaltimer")
        _common_args(sp)
        if mod is not None and hasattr(mod, "add_arguments"):
            mod.add_arguments(sp)


def _context(args: argparse.Namespace, quick: bool) -> BenchContext:
    known = {"quick", "long", "json_path", "plot_path", "device", "emulate", "seed", "cmd", "bench_name"}
    return BenchContext(
        quick=quick,
        device=args.device or default_device(),
        emulate=args.emulate,
        json_path=args.json_path,
        plot_path=args.plot_path,
        long=args.long,
        seed=args.seed,
        extra={k: v for k, v in vars(args).items() if k not in known},
    )


def run_one(name: str, ctx: BenchContext) -> BenchResult:
    mod = _load(name)
    if mod is None:
        raise RuntimeError(f"benchmark {name!r} is not available in this build")
    result: BenchResult = mod.run(ctx)
    result.environment = {**environment(ctx), **result.environment}
    return result


def add_parser(sub: Any) -> None:
    """The ``cc-runtime bench`` entry of ``cc_runtime.cli.COMMANDS``."""
    add_bench_parser(sub)


def main(args: argparse.Namespace) -> int:
    return main_bench(args)


def _cuda_missing() -> str | None:
    """Why ``--device cuda`` cannot run here (one line), or None."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return f"torch cannot be imported ({type(exc).__name__}: {exc})"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU"
    return None


def main_bench(args: argparse.Namespace) -> int:
    if args.device == "cuda":
        why = _cuda_missing()
        if why:
            print(f"cc-runtime bench: --device cuda: {why}; use --device cpu (the simulated device)",
                  file=sys.stderr)
            return 2
    from ..settings import VARS, SettingsError

    try:  # the same check as CC_RUNTIME_EMULATE, in one place (cc_runtime.settings.emulate_profile)
        if VARS["CC_RUNTIME_EMULATE"].parse("--emulate", args.emulate) is None:
            raise SettingsError("--emulate", args.emulate, "h100 | b300 | /path/profile.json",
                                "the emulated arms need a CC profile")
    except SettingsError as exc:
        print(f"cc-runtime bench: {exc}", file=sys.stderr)
        return 2
    if args.bench_name:
        ctx = _context(args, quick=args.quick)
        result = run_one(args.bench_name, ctx)
        print_table(result.rows, result.columns, result.title or result.benchmark)
        for note in result.notes:
            print(f"note: {note}")
        print("summary: " + ", ".join(f"{k}={v}" for k, v in result.summary.items()))
        if ctx.json_path:
            write_json(ctx.json_path, result)
        return 0
    return run_all(args)


def run_all(args: argparse.Namespace) -> int:
    """Every benchmark in quick mode, one summary table; JSON per benchmark beside --json if given."""
    ctx = _context(args, quick=True)
    rows: list[dict[str, Any]] = []
    failed = 0
    out_dir = None
    if ctx.json_path:
        out_dir = ctx.json_path if not ctx.json_path.endswith(".json") else os.path.dirname(ctx.json_path)
    for name in BENCHMARKS:
        if _load(name) is None:
            rows.append({"benchmark": name, "status": "not available", "seconds": 0.0, "summary": ""})
            continue
        t0 = time.perf_counter()
        try:
            sub_ctx = BenchContext(**{**vars(ctx), "json_path": None})
            result = run_one(name, sub_ctx)
            status = "ok"
            # The headline metrics come first in each benchmark's summary; the JSON has them all.
            summary = ", ".join(f"{k}={_short(v)}" for k, v in list(result.summary.items())[:3])
            print_table(result.rows, result.columns, result.title or result.benchmark)
            print()
            if out_dir:
                write_json(os.path.join(out_dir, f"{name}.json"), result)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
            failed += 1
            status, summary = "FAILED", f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        rows.append({"benchmark": name, "status": status, "seconds": time.perf_counter() - t0,
                     "summary": summary})
    cc = environment(ctx)["cc"]
    kind = "simulated device" if ctx.simulated else "CUDA"
    print(format_table(rows, ["benchmark", "status", "seconds", "summary"],
                       f"cc-runtime bench (quick, {kind}, CC arms {cc})"))
    return 1 if failed else 0


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
