"""``cc-runtime sweep``: CC serving sweep with SGLang's server and benchmark client; ``sweep report``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .. import settings
from . import grid
from .models import TINY_LLAMA

DEFAULT_OUT = "cc-runtime-sweep"

DESCRIPTION = """\
Reproduce NVIDIA's CC serving table for your model and GPUs: per arm, start `python -m
sglang.launch_server` (as `cc-runtime launch` runs it) on a free local port, wait for /health, run SGLang's
benchmark client once per (ISL/OSL, concurrency) cell, stop the server's whole process group. Results:
OUT/results.jsonl (one line per cell), OUT/report.md and PNG plots. A rerun skips finished cells.
Arguments after -- go to the server unchanged, e.g. -- --model-path /models/x --tp 4.
`cc-runtime sweep report A.jsonl B.jsonl ...` rebuilds the table and plots from saved results (also
merging runs from several machines: CC off cannot run on a CC machine).
Client: sglang.benchmark.serving, or sglang.bench_serving on old releases (0.5.12), found in --python;
both have --dataset-name random-ids. A client without it needs --client-arg=--dataset-name=random
--client-arg=--dataset-path=SHAREGPT.json (extra client arguments come last, so they win)."""

ARMS_HELP = ("comma-separated arms (default all): cc-off = cc_runtime disabled, CC off; cc = CC on (or "
             "emulated) without cc_runtime's fixes (upstream behaviour); cc+cc_runtime = CC with every patch")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("sweep", help="serving sweep: CC off vs CC vs CC + cc_runtime with SGLang (report: "
                       "tables and plots from saved results)", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage="cc-runtime sweep [options] -- SERVER_ARGS...\n       cc-runtime sweep report "
                             "RESULTS.jsonl [RESULTS.jsonl ...] [--out DIR]")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output folder (default ./{DEFAULT_OUT}); a rerun into it resumes")
    p.add_argument("--arms", default=",".join(("cc-off", "cc", "cc+cc_runtime")), help=ARMS_HELP)
    p.add_argument("--emulate", default=None, metavar="PROFILE",
                   help="on a machine without CC: emulate CC in the CC arms with this profile (h100, b300 or "
                        "a JSON file); every output then says 'emulated'")
    p.add_argument("--patches", default="*", metavar="LIST",
                   help="CC_RUNTIME_PATCHES of the cc+cc_runtime arm (default '*': every patch but the opt-in "
                        "ones, which apply only when named, e.g. 'sglang.*,flashinfer.*,triton.*,inductor.*,"
                        "emulation,sglang.allreduce_fusion_ipc')")
    p.add_argument("--quick", action="store_true",
                   help=f"small grid: ISL/OSL {_pairs(grid.QUICK_ISL_OSL)}, concurrency "
                        f"{_ints(grid.QUICK_CONCURRENCY)}, {grid.QUICK_PROMPTS_PER_CONCURRENCY} prompts per slot")
    p.add_argument("--dry-run", action="store_true", help="print every command it would run, run nothing")
    p.add_argument("--dummy-weights", action="store_true",
                   help="--load-format dummy and HF_HUB_OFFLINE=1: random weights from a local config + "
                        "tokenizer folder (default: the small Llama shipped with cc_runtime)")
    p.add_argument("--isl-osl", default=None, metavar="I/O,...",
                   help=f"input/output lengths (default {_pairs(grid.DEFAULT_ISL_OSL)})")
    p.add_argument("--concurrency", default=None, metavar="N,...",
                   help=f"concurrencies (default {_ints(grid.DEFAULT_CONCURRENCY)})")
    p.add_argument("--prompts-per-concurrency", type=int, default=None, metavar="K",
                   help=f"--num-prompts = K x concurrency, at least {grid.MIN_PROMPTS} (default "
                        f"{grid.DEFAULT_PROMPTS_PER_CONCURRENCY})")
    p.add_argument("--num-prompts", type=int, default=None, help="fixed prompt count for every cell")
    p.add_argument("--warmup-requests", type=int, default=None, help="default: one per concurrency slot")
    p.add_argument("--seed", type=int, default=grid.DEFAULT_SEED)
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs the server uses (default: tp x pp x dp from the server arguments)")
    p.add_argument("--python", default=sys.executable, help="interpreter with SGLang (server and client)")
    p.add_argument("--client-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the benchmark client (repeat; e.g. --client-arg=--dataset-path=X)")
    p.add_argument("--health-timeout", type=float, default=1800.0, metavar="S",
                   help="longest wait for a server's /health (default 1800)")
    p.add_argument("--cell-timeout", type=float, default=7200.0, metavar="S",
                   help="longest run of one benchmark client (default 7200)")
    p.add_argument("--no-resume", action="store_true", help="rerun cells that already have a result")
    p.add_argument("--test-server", action="store_true",
                   help="serve with cc_runtime's loopback TEST SERVER instead of SGLang (a stand-in without a "
                        "GPU or a model, for testing the sweep; results are labelled as such)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cc-runtime sweep report",
                                description="Markdown table laid out like NVIDIA's published CC serving table "
                                            "(per input/output length: one row per concurrency with output "
                                            "tokens/s per GPU for each arm, the change against CC off, median "
                                            "TTFT and TPOT) and PNG plots, from saved sweep results; several "
                                            "files merge (e.g. CC off from one machine, CC on from another).")
    p.add_argument("files", nargs="+", metavar="RESULTS.jsonl")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where report.md and the plots go (default: the folder of the only file, or "
                        "./cc-runtime-sweep-report for several)")
    return p


def _pairs(pairs: Any) -> str:
    return ",".join(f"{i}/{o}" for i, o in pairs)


def _ints(xs: Any) -> str:
    return ",".join(str(x) for x in xs)


def _opt(args: list[str], *names: str) -> str | None:
    """The value of the last ``--name V`` / ``--name=V`` among server arguments."""
    found = None
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                found = args[i + 1]
            elif a.startswith(n + "="):
                found = a.split("=", 1)[1]
    return found


def gpus_from_server_args(args: list[str]) -> int:
    """tp x pp x dp (dp inside tp with --enable-dp-attention), as SGLang places ranks."""
    def n(*names: str) -> int:
        v = _opt(args, *names)
        return int(v) if v and v.isdigit() and int(v) > 0 else 1

    tp = n("--tp", "--tp-size", "--tensor-parallel-size")
    pp = n("--pp", "--pp-size", "--pipeline-parallel-size")
    dp = 1 if "--enable-dp-attention" in args else n("--dp", "--dp-size", "--data-parallel-size")
    return tp * pp * dp


def main(args: argparse.Namespace) -> int:
    rest = list(args.rest or [])
    if rest and rest[0] == "report":
        return main_report(_report_parser().parse_args(rest[1:]))
    if rest and rest[0] != "--":
        print(f"cc-runtime sweep: unexpected {rest[0]!r}; server arguments go after --, e.g. cc-runtime sweep "
              "--quick -- --model-path /models/x", file=sys.stderr)
        return 2
    server_args = rest[1:]
    try:
        cfg = _config(args, server_args)
    except (ValueError, settings.SettingsError) as exc:
        print(f"cc-runtime sweep: {exc}", file=sys.stderr)
        return 2
    from .runner import Sweep

    sweep = Sweep(cfg)
    if args.dry_run:
        sweep.dry_run()
        return 0
    from . import report
    from .runner import environment_record

    cfg.environment = environment_record(cfg.python, cfg.client)
    _terminate_as_interrupt()
    try:
        failed = sweep.run()
    except KeyboardInterrupt:
        print("cc-runtime sweep: interrupted; finished cells are kept, rerun to resume", file=sys.stderr)
        return 130
    rep = report.write(sweep.store.records, cfg.out_dir)
    print("\n" + rep.markdown)
    for note in rep.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"results: {cfg.results_path}; report: {os.path.join(cfg.out_dir, report.REPORT_FILE)}"
          + (f"; {len(rep.plots)} plot(s)" if rep.plots else ""))
    return 1 if failed else 0


def _terminate_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers (each in its own session) are stopped, not orphaned."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _config(args: argparse.Namespace, server_args: list[str]) -> Any:
    from ..detect import probe_nvml
    from .arms import ArmError, parse_arms, plan_arms
    from .client import detect_client
    from .runner import SweepConfig

    for bad in ("--host", "--port"):
        if _opt(server_args, bad) is not None or bad in server_args:
            raise ValueError(f"{bad} is chosen by the sweep (127.0.0.1 and a free port); drop it from the "
                             "server arguments")
    if "--skip-tokenizer-init" in server_args:
        raise ValueError("--skip-tokenizer-init: SGLang's benchmark client counts only streamed chunks that "
                         "carry text, so it would measure nothing")
    server_args = list(server_args)
    model = _opt(server_args, "--model-path", "--model")
    if args.dummy_weights:
        if model is None:
            model = TINY_LLAMA
            server_args = ["--model-path", model, *server_args]
        if _opt(server_args, "--load-format") is None:
            server_args += ["--load-format", "dummy"]
    elif model is None and not args.test_server:
        raise ValueError("no --model-path among the server arguments (after --); or use --dummy-weights for "
                         "the small model shipped with cc_runtime")
    tokenizer = _opt(server_args, "--tokenizer-path") or (model if model and os.path.isdir(model) else None)

    if args.quick:
        pairs, concs, per = grid.QUICK_ISL_OSL, grid.QUICK_CONCURRENCY, grid.QUICK_PROMPTS_PER_CONCURRENCY
    else:
        pairs, concs, per = grid.DEFAULT_ISL_OSL, grid.DEFAULT_CONCURRENCY, grid.DEFAULT_PROMPTS_PER_CONCURRENCY
    cells = grid.build_grid(
        grid.parse_isl_osl(args.isl_osl) if args.isl_osl else pairs,
        grid.parse_ints(args.concurrency, "concurrency") if args.concurrency else concs,
        prompts_per_concurrency=args.prompts_per_concurrency or per, num_prompts=args.num_prompts,
        warmup_requests=args.warmup_requests, seed=args.seed)
    try:
        names = parse_arms(args.arms)
        hw = probe_nvml()
        plans = plan_arms(names, emulate=args.emulate, real_cc=hw.real, real_reason=hw.reason, patches=args.patches)
    except ArmError as exc:
        raise ValueError(str(exc)) from None
    gpus = args.gpus if args.gpus is not None else gpus_from_server_args(server_args)
    if gpus <= 0:
        raise ValueError("--gpus must be positive")
    return SweepConfig(out_dir=os.path.abspath(args.out), cells=cells, arms=plans, server_args=server_args,
                       client=detect_client(args.python), python=args.python, test_server=args.test_server,
                       gpus=gpus, tokenizer=tokenizer, client_extra=list(args.client_arg),
                       health_timeout_s=args.health_timeout, cell_timeout_s=args.cell_timeout,
                       resume=not args.no_resume, offline=args.dummy_weights)


def main_report(args: argparse.Namespace) -> int:
    from . import report

    records, notes = report.load(args.files)
    out = args.out or (os.path.dirname(os.path.abspath(args.files[0])) if len(args.files) == 1
                       else "cc-runtime-sweep-report")
    if not records:
        print("cc-runtime sweep report: no sweep results in " + ", ".join(args.files)
              + ("; " + "; ".join(notes) if notes else ""), file=sys.stderr)
        return 1
    rep = report.write(records, out, notes)
    print(rep.markdown)
    for note in rep.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"report: {os.path.join(out, report.REPORT_FILE)}" + (f"; {len(rep.plots)} plot(s)" if rep.plots else ""))
    return 0
