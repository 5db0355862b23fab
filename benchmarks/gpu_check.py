#!/usr/bin/env python3
"""The project's GPU check: one command, run from the source tree on a GPU machine with no network.

    python benchmarks/gpu_check.py OUTDIR [--budget-s 480] [--smoke] [--skip-tests] [--only NAME,...]

Writes into OUTDIR: doctor.json; gpu_tests.jsonl (one line per test as it starts and ends) and
gpu_tests.log; one <benchmark>.json per capability (CUDA device, emulated CC arms labelled as such);
and gpu_check.json, the summary (each step's status, seconds and headline metrics), rewritten after
every step so a check killed half-way still leaves what it measured (``complete`` says whether it ran
to the end). Needs only what the device image has (torch, Triton, cuda-python, nvidia-ml-py, wrapt,
numpy, pytest, hypothesis; not pytest-timeout): each step runs in its own subprocess with a time
limit, and each GPU test has its own limit (benchmarks/gpu_test_timeout.py: faulthandler ends a hung
test's process; the run resumes without it). ``--smoke`` (about 3 minutes): doctor, the timer's GPU
tests and a short readback run. The full check also runs ``cc-runtime calibrate`` with CC off
(calibrate_cc_off.json, this GPU's baseline profile) and the emulator's round trip against h100.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# In this order: the emulator's round trip and the step benchmark have no GPU evidence yet and are run
# first; prefill (graph capture of every size) is the longest and goes last, so a spent budget drops it.
BENCHMARKS = ("emulator", "step", "timer", "readback", "prefill")
SMOKE_BUDGET_S = 170.0
SMOKE_TESTS = ["tests/timer/test_timer_gpu.py"]
SMOKE_READBACK = ["--batch-sizes", "1,64", "--steps", "30", "--reps", "2"]
# The emulator benchmark's imposition run: emulate h100 on this GPU and measure it back with calibrate's
# own methods (emulated_imposition_max_rel_error; h100 was not measured on this GPU, so not fidelity).
BENCH_ARGS = {"emulator": ["--emulate", "h100"]}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("CC_RUNTIME_LOG_LEVEL", "INFO")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _step(name: str, cmd: list[str], timeout_s: float, log_path: Path, stdout_path: Path | None = None,
          env: dict[str, str] | None = None, log_mode: str = "w") -> dict[str, Any]:
    t0 = time.perf_counter()
    print(f"[gpu_check] {name}: {' '.join(cmd)} (limit {timeout_s:.0f}s)", flush=True)
    try:
        with open(log_path, log_mode) as log, open(stdout_path or os.devnull, "w") as stdout:
            rc = subprocess.run(cmd, cwd=REPO, env=env or _env(), stdout=stdout if stdout_path else log,
                                stderr=log, timeout=timeout_s).returncode
        status = "ok" if rc == 0 else ("no tests ran (exit 5)" if rc == 5 else f"failed (exit {rc})")
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout_s:.0f}s"
    seconds = round(time.perf_counter() - t0, 1)
    tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
    print(f"[gpu_check] {name}: {status} in {seconds}s\n{tail}", flush=True)
    return {"step": name, "status": status, "seconds": seconds, "log": log_path.name}


def read_test_log(path: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(test ids in start order, results by test id) from the plugin's JSON-lines file."""
    started: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return started, results
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by the end of the process
        if rec.get("event") == "start":
            started.append(rec["nodeid"])
        elif rec.get("event") == "result":
            results.setdefault(rec["nodeid"], rec)
    return started, results


def run_gpu_tests(out: Path, paths: list[str], budget_s: float, per_test_s: float, py: str) -> dict[str, Any]:
    """All GPU tests under ``paths``; a test past its limit is recorded as timed out and the run resumes
    without it until every test has a result or the budget is spent."""
    jsonl, log = out / "gpu_tests.jsonl", out / "gpu_tests.log"
    jsonl.write_text("")
    log.write_text("")
    env = _env({"CC_GPU_CHECK_RESULTS": str(jsonl), "CC_GPU_CHECK_TEST_TIMEOUT_S": str(per_test_s)})
    deadline = time.monotonic() + budget_s
    timed_out: list[str] = []
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    while True:
        _, results = read_test_log(jsonl)
        skip = [*results, *timed_out]
        left = deadline - time.monotonic()
        if left < 10:
            break
        cmd = [py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-p", "gpu_test_timeout",
               f"--junitxml={out / f'gpu_tests_{len(runs)}.xml'}", *paths, *[f"--deselect={n}" for n in skip]]
        runs.append(_step(f"gpu-tests (run {len(runs) + 1})", cmd, left, log, env=env, log_mode="a"))
        started, results = read_test_log(jsonl)
        hung = [n for n in started if n not in results and n not in timed_out]
        if not hung:
            break  # every test that started has a result: the run finished (or never started)
        timed_out += hung
    started, results = read_test_log(jsonl)
    counts: dict[str, int] = {}
    for rec in results.values():
        counts[rec["outcome"]] = counts.get(rec["outcome"], 0) + 1
    never = [n for n in started if n not in results and n not in timed_out]
    ok = not timed_out and not never and counts.get("failed", 0) == 0 and bool(results)
    return {"step": "gpu-tests", "status": "ok" if ok else "failed", "seconds": round(time.perf_counter() - t0, 1),
            "log": log.name, "results": jsonl.name, "counts": counts, "timed_out": timed_out,
            "failed": [n for n, r in results.items() if r["outcome"] == "failed"], "runs": runs}


def _summary(out: Path, steps: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
    device = None
    try:
        device = json.loads((out / "doctor.json").read_text())["gpu"]["devices"]
    except Exception:  # noqa: BLE001 - the summary must still be written
        pass
    summary = {"device": device, "complete": complete, "steps": steps,
               "ok": complete and all(s["status"] == "ok" for s in steps)}
    tmp = out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(out / "gpu_check.json")  # never a half-written file, whenever the check is killed
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--budget-s", type=float, default=None,
                    help=f"total wall-clock budget (default 480; {SMOKE_BUDGET_S:.0f} with --smoke)")
    ap.add_argument("--smoke", action="store_true", help="doctor, the timer's GPU tests, a short readback run")
    ap.add_argument("--test-timeout-s", type=float, default=None, help="limit per GPU test (default 120; 45 smoke)")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated benchmarks to run (default: all)")
    args = ap.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    budget = args.budget_s or (SMOKE_BUDGET_S if args.smoke else 480.0)
    deadline = time.monotonic() + budget
    py = sys.executable
    steps: list[dict[str, Any]] = []

    def left(cap: float) -> float:
        return max(10.0, min(cap, deadline - time.monotonic()))

    def record(step: dict[str, Any]) -> None:
        steps.append(step)
        _summary(out, steps, complete=False)

    record(_step("doctor", [py, "-m", "cc_runtime", "doctor", "--json"], left(30 if args.smoke else 60),
                 out / "doctor.log", stdout_path=out / "doctor.json"))
    if not args.skip_tests:
        paths = SMOKE_TESTS if args.smoke else ["tests"]
        per_test = args.test_timeout_s or (45.0 if args.smoke else 120.0)
        record(run_gpu_tests(out, paths, left(90 if args.smoke else 180), per_test, py))
    if not args.smoke and not args.only:
        # calibrate with CC off: the baseline profile of this GPU, kept as a result.
        if time.monotonic() > deadline - 15:
            record({"step": "calibrate", "status": "not run: budget spent", "seconds": 0})
        else:
            record(_step("calibrate", [py, "-m", "cc_runtime", "calibrate", "--device", "cuda", "--quick",
                                       "--out", str(out / "calibrate_cc_off.json")],
                         left(120), out / "calibrate.log"))  # quick: seconds on a GPU; 120 is a cap
    only = ["readback"] if args.smoke else ([b for b in args.only.split(",") if b] or list(BENCHMARKS))
    for name in only:
        if time.monotonic() > deadline - 15:
            record({"step": f"bench-{name}", "status": "not run: budget spent", "seconds": 0})
            continue
        json_path = out / f"{name}.json"
        extra = SMOKE_READBACK if args.smoke else BENCH_ARGS.get(name, [])
        step = _step(f"bench-{name}", [py, "-m", "cc_runtime", "bench", name, "--quick", "--device", "cuda",
                                       "--json", str(json_path), *extra],
                     left(50 if args.smoke else 150), out / f"bench_{name}.log")
        if json_path.exists():
            try:
                step["summary"] = json.loads(json_path.read_text()).get("summary")
            except ValueError as exc:
                step["summary"] = f"unreadable JSON: {exc}"
        record(step)
    summary = _summary(out, steps, complete=True)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
