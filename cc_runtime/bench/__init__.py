"""``cc-runtime bench``: one subcommand per benchmark; no subcommand runs all of them quickly.

A benchmark module defines ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(ctx) -> BenchResult``.
Exit status: 0 when every benchmark ran (whatever the goals' verdicts), 1 when one failed, and with
``--check`` also 1 when any goal is ``MISSED`` (an ``inconclusive (noise)`` verdict does not fail).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from typing import Any

from . import partial
from .common import (
    BenchContext,
    BenchResult,
    default_device,
    environment,
    fmt_spread,
    format_table,
    plot_summary,
    print_table,
    write_json,
)
from .goals import judged
from .machine_load import busy_note, over_run, snapshot
from .verdicts import any_missed

BENCHMARKS: dict[str, str] = {
    "emulator": "cc_runtime.bench.emulator",
    "timer": "cc_runtime.bench.timer",
    "readback": "cc_runtime.bench.readback",
    "prefill": "cc_runtime.bench.prefill",
    "startup": "cc_runtime.bench.startup",
    "step": "cc_runtime.bench.step",
    "load": "cc_runtime.bench.load",
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
    p.add_argument("--plot", dest="plot_path", metavar="PNG|DIR",
                   help="write a plot: a .png path, or a folder that gets <benchmark>.png (one per benchmark)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="cuda (default when present) or cpu (the emulator's simulated device)")
    p.add_argument("--emulate", default="h100", metavar="PROFILE",
                   help="CC profile for the emulated arms: h100, b300 or a JSON file (default h100)")
    p.add_argument("--seed", type=int, default=0)
    # SUPPRESS: absent unless given, so `bench --check readback` keeps it (a subparser's default would
    # overwrite the parent's value).
    p.add_argument("--check", action="store_true", default=argparse.SUPPRESS,
                   help="exit 1 if any goal is MISSED (without it, verdicts are reported and the exit is 0)")


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
    known = {"quick", "long", "json_path", "plot_path", "device", "emulate", "seed", "cmd", "bench_name", "check"}
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
    env = environment(ctx)
    before = snapshot()
    with partial.writing(ctx.json_path, name, env):  # a run killed at its cap still leaves its JSON
        result: BenchResult = mod.run(ctx)
    # The machine's load over the run, beside the spreads it explains (steal: the hypervisor's share).
    load = over_run(before, snapshot())
    result.environment = {**env, "load": load, **result.environment}
    note = busy_note(load)
    if note:
        result.notes.append(note)
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

    try:  # the same check as CC_RUNTIME_EMULATE, in one place (cc_runtime.settings_checks.emulate_profile)
        if VARS["CC_RUNTIME_EMULATE"].parse("--emulate", args.emulate) is None:
            raise SettingsError("--emulate", args.emulate, "h100 | b300 | /path/profile.json",
                                "the emulated arms need a CC profile")
    except SettingsError as exc:
        print(f"cc-runtime bench: {exc}", file=sys.stderr)
        return 2
    if args.bench_name:
        ctx = _context(args, quick=args.quick)
        if ctx.plot_path and _is_dir_arg(ctx.plot_path):
            ctx.plot_path = os.path.join(ctx.plot_path, f"{args.bench_name}.png")
        result, plots = run_and_plot(args.bench_name, ctx)
        goals = report(result, ctx.json_path, plots)
        return 1 if getattr(args, "check", False) and any_missed(goals) else 0
    return run_all(args)


def _is_dir_arg(path: str) -> bool:
    return os.path.isdir(path) or not path.lower().endswith(".png")


def _mtime(path: str | None) -> float | None:
    return os.path.getmtime(path) if path and os.path.exists(path) else None


def run_and_plot(name: str, ctx: BenchContext) -> tuple[BenchResult, list[str]]:
    """Run one benchmark; a plot path the benchmark did not draw gets the summary plot. The plots written."""
    before = _mtime(ctx.plot_path)
    result = run_one(name, ctx)
    if not ctx.plot_path:
        return result, []
    if _mtime(ctx.plot_path) == before:
        err = plot_summary(result, ctx.plot_path)
        if err:
            result.notes.append(f"plot not written: {err}")
    return result, [ctx.plot_path] if _mtime(ctx.plot_path) != before else []


def report(result: BenchResult, json_path: str | None, plots: list[str]) -> list[dict[str, str]]:
    """Write the JSON; print one benchmark's table, notes, summary (rounded, with spread), goals, files."""
    written = list(plots)
    if json_path:
        write_json(json_path, result)
        written.insert(0, json_path)
    print_table(result.rows, result.columns, result.title or result.benchmark)
    for note in result.notes:
        print(f"note: {note}")
    print("summary (this run; median [min-max] where repeated): "
          + ", ".join(f"{k}={fmt_spread(v)}" for k, v in result.summary.items()))
    if result.model:
        print("model (computed or assumed, not measured): "
              + ", ".join(f"{k}={fmt_spread(v.get('value') if isinstance(v, dict) else v)}"
                          for k, v in result.model.items()))
    goals = judged(result.benchmark, result.environment.get("device_kind", "simulated"), result.summary)
    load = result.environment.get("load") or {}
    if load.get("before"):
        print(f"machine load: loadavg {load['before'].get('loadavg')} before, {load['after'].get('loadavg')} "
              f"after; CPU busy {load.get('busy_pct')}%, steal {load.get('steal_pct')}% over the run")
    for g in goals:
        print(f"goal: {g['goal']}: {g['value']} -> {g['result']}")
    for path in written:
        print(f"wrote {path}")
    return goals


def run_all(args: argparse.Namespace) -> int:
    """Every benchmark in quick mode, one summary table; JSON per benchmark beside --json if given,
    one PNG per benchmark in --plot DIR."""
    ctx = _context(args, quick=True)
    rows: list[dict[str, Any]] = []
    failed = 0
    out_dir = plot_dir = None
    if ctx.json_path:
        out_dir = ctx.json_path if not ctx.json_path.endswith(".json") else os.path.dirname(ctx.json_path)
    if ctx.plot_path:
        plot_dir = ctx.plot_path if _is_dir_arg(ctx.plot_path) else os.path.dirname(ctx.plot_path) or "."
        os.makedirs(plot_dir, exist_ok=True)
    written: list[str] = []
    missed = 0
    names = list(BENCHMARKS)
    for i, name in enumerate(names, 1):
        if _load(name) is None:
            rows.append({"benchmark": name, "status": "not available", "seconds": 0.0, "headline": "",
                         "goal": "", "result": ""})
            continue
        print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            json_path = os.path.join(out_dir, f"{name}.json") if out_dir else None
            sub_ctx = BenchContext(**{**vars(ctx), "json_path": json_path,
                                      "plot_path": os.path.join(plot_dir, f"{name}.png") if plot_dir else None})
            result, plots = run_and_plot(name, sub_ctx)
            goals = report(result, json_path, plots)
            print()
            written += ([json_path] if json_path else []) + plots
            seconds = time.perf_counter() - t0
            missed += any_missed(goals)
            if goals:
                for g in goals:
                    rows.append({"benchmark": name, "status": "ok", "seconds": seconds, "headline": g["value"],
                                 "goal": g["goal"], "result": g["result"]})
            else:
                head = ", ".join(f"{k}={fmt_spread(v)}" for k, v in list(result.summary.items())[:2])
                rows.append({"benchmark": name, "status": "ok", "seconds": seconds, "headline": head,
                             "goal": "(none set)", "result": ""})
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
            failed += 1
            traceback.print_exc(file=sys.stderr)
            rows.append({"benchmark": name, "status": "FAILED", "seconds": time.perf_counter() - t0,
                         "headline": f"{type(exc).__name__}: {exc}", "goal": "", "result": ""})
        print(f"[{i}/{len(names)}] {name} done in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    cc = environment(ctx)["cc"]
    kind = "simulated device" if ctx.simulated else "CUDA"
    print(format_table(rows, ["benchmark", "status", "seconds", "goal", "headline", "result"],
                       f"cc-runtime bench (quick, {kind}, CC arms {cc}; values: median [min-max])"))
    # Each benchmark's report above already listed its files ("wrote PATH"); name the folders once.
    folders = [f"{what} in {d}" for what, d in (("JSON", out_dir), ("plots", plot_dir)) if d]
    if written and folders:
        print(f"{len(written)} files written: " + ", ".join(folders))
    if missed and getattr(args, "check", False):
        print(f"cc-runtime bench --check: {missed} benchmark(s) with a MISSED goal", file=sys.stderr)
        return 1
    return 1 if failed else 0
