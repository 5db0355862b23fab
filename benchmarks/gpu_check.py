#!/usr/bin/env python3
"""The project's GPU check: one command, run from the source tree on a GPU machine with no network.

    python benchmarks/gpu_check.py OUTDIR [--smoke] [--budget-s N] [--simulate] [--skip-tests] [--only NAME,...]
    python benchmarks/gpu_check.py --lease OUTDIR [--lease-s 540] [--simulate]

Writes into OUTDIR (docs/gpu-check.md lists every file): doctor.json; gpu_tests.jsonl (one line per test
event as it happens) and gpu_tests.log; one <benchmark>.json per benchmark, rewritten as its runs finish
(``complete: false`` until it returns, so a benchmark killed at its cap still leaves what it measured);
and gpu_check.json, the summary (each step's status, seconds, cap and headline metrics), rewritten after
every step (``complete`` says whether the check ran to its end). Needs only what the device image has
(torch, Triton, cuda-bindings, nvidia-ml-py, wrapt, numpy, pytest): each step runs in its own
subprocess under a time cap, each GPU test under its own limit (benchmarks/gpu_test_timeout.py); a step
whose package is missing is skipped with its reason.

``--smoke`` (inside 150 s, 30 s of margin in three minutes): doctor; the GPU tests of what ships (the
timer, the readback worker and its SGLang-free patch path, the stager and the deferred scope with
``CC_RUNTIME_STAGING_VERIFY=1``); a short readback and a short step benchmark. The full check adds every
GPU test, ``cc-runtime calibrate`` with CC off and every benchmark. ``--simulate`` runs the same steps,
the same commands and the same summary with the emulator's simulated device in place of CUDA
(``--device cpu``, no GPU visible, smaller sizes): a commit rehearses the check a lent GPU will run.
``--lease`` is the one command for a lent machine: ``--smoke``, then the full check in the time left,
then everything packed into OUTDIR as at most four files.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from gpu_check_tests import run_gpu_tests  # noqa: E402 - benchmarks/ is not a package


@dataclass(frozen=True)
class Plan:
    """One step: its time cap on the device, and the CPU seconds it took under ``--simulate`` on the
    2-core development machine (``cpu_s``: the step's processes' user + system time, which the machine's
    load does not inflate; 2026-12-07. The GPU tests skip there, so theirs is pytest's start and
    collection; the benchmarks ran the smoke sizes). A cap is that, the GPU's own work and margin."""

    name: str
    cap_s: float
    cpu_s: float


# In this order: doctor first (it names the device), then the tests, then the benchmarks. Caps sum to
# SMOKE_BUDGET_S: 30 s of margin inside the 3 minutes a smoke run is given.
SMOKE_PLAN = (Plan("doctor", 20, 4), Plan("gpu-tests", 80, 7), Plan("bench-readback", 25, 4),
              Plan("bench-step", 25, 4))
SMOKE_BUDGET_S = 150.0
# --simulate: every cap and the budget times this. A shared 2-core CPU machine starts Python and torch
# several times slower than the device's 16 cores; the rehearsal checks the wiring, and the caps' fit is
# checked on CPU seconds (tests/bench/test_gpu_check.py), which load does not inflate.
SIMULATE_CAP_SCALE = 3.0
# The emulator's round trip and the step benchmark have no GPU evidence yet and run first; prefill
# (graph capture of every size) is the longest and goes last, so a spent budget drops it.
BENCHMARKS = ("emulator", "step", "timer", "readback", "load", "prefill")
FULL_CAPS = {"doctor": 60.0, "gpu-tests": 180.0, "calibrate": 120.0, "bench": 150.0}
SMOKE_TESTS = ["tests/timer/test_timer_gpu.py", "tests/readback/test_readback_worker_gpu.py",
               "tests/staging/*_gpu.py"]
# The staging tests run with the verification mode on: every staged read compared with the unstaged copy.
SMOKE_TEST_ENV = {"CC_RUNTIME_STAGING_VERIFY": "1"}
SMOKE_ARGS = {"readback": ["--batch-sizes", "1,64", "--steps", "30", "--reps", "2"],
              "step": ["--batch-sizes", "1,64", "--prefill-tokens", "1024", "--steps", "20", "--reps", "2"]}
# The emulator benchmark's imposition run: emulate h100 on this GPU and measure it back with calibrate's
# own methods (emulated_imposition_max_rel_error; h100 was not measured on this GPU, so not fidelity).
BENCH_ARGS = {"emulator": ["--emulate", "h100"],
              # a 2 GB checkpoint at real tensor counts, every arm (upstream per-tensor vs cc_runtime's
              # loader, CC off and emulated), bytes compared
              "load": ["--size-gb", "2", "--all-arms", "--reps", "1"]}
# --simulate only: sizes small enough that rehearsing the full check costs CI seconds, not minutes.
SIMULATE_ARGS = {"readback": ["--batch-sizes", "1", "--steps", "10", "--reps", "1"],
                 "step": ["--batch-sizes", "1", "--prefill-tokens", "128", "--steps", "10", "--reps", "1"],
                 "prefill": ["--max-tokens", "256", "--layers", "1"],
                 "load": ["--size-gb", "0.02", "--shapes", "dense"]}
# What each step imports beyond the standard library: missing => the step is skipped with the reason.
NEEDS = {"gpu-tests": ("pytest",), "calibrate": ("torch",), "bench-timer": ("torch", "triton")}
NEEDS_DEFAULT_BENCH = ("torch",)


def _env(simulate: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("CC_RUNTIME_LOG_LEVEL", "INFO")
    env["PYTHONUNBUFFERED"] = "1"
    if simulate:
        env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU can leak in: every step takes the simulated path
    env.update(extra or {})
    return env


def _step(name: str, cmd: list[str], timeout_s: float, log_path: Path, stdout_path: Path | None = None,
          env: dict[str, str] | None = None, log_mode: str = "w") -> dict[str, Any]:
    t0 = time.perf_counter()
    cpu0 = _children_cpu_s()
    print(f"[gpu_check] {name}: {' '.join(cmd)} (limit {timeout_s:.0f}s)", flush=True)
    rc: int | None = None
    try:
        with open(log_path, log_mode) as log, open(stdout_path or os.devnull, "w") as stdout:
            rc = subprocess.run(cmd, cwd=REPO, env=env or _env(False), stdout=stdout if stdout_path else log,
                                stderr=log, timeout=timeout_s).returncode
        status = "ok" if rc == 0 else ("no tests ran (exit 5)" if rc == 5 else f"failed (exit {rc})")
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout_s:.0f}s"
    seconds = round(time.perf_counter() - t0, 1)
    tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
    print(f"[gpu_check] {name}: {status} in {seconds}s\n{tail}", flush=True)
    return {"step": name, "status": status, "rc": rc, "seconds": seconds, "cap_s": round(timeout_s, 1),
            "cpu_seconds": round(_children_cpu_s() - cpu0, 1), "log": log_path.name}


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of every finished child so far: a step's cost, whatever the load."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def missing(step: str) -> str | None:
    """Why ``step`` cannot run here (a package it needs is not importable), or None."""
    needs = NEEDS.get(step, NEEDS_DEFAULT_BENCH if step.startswith("bench-") else ())
    for mod in needs:
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return (f"skipped: needs {mod}, which is not installed here "
                    "(docs/gpu-check.md: scripts/prepare_gpu_wheels.py carries what the image lacks)")
    return None


def _bench_record(step: dict[str, Any], json_path: Path) -> dict[str, Any]:
    step["json"] = json_path.name
    if not json_path.exists():
        step["json_complete"] = False
        return step
    try:
        doc = json.loads(json_path.read_text())
    except ValueError as exc:
        step["summary"] = f"unreadable JSON: {exc}"
        return step
    step["json_complete"] = bool(doc.get("complete"))
    step["summary"] = doc.get("summary")
    if not doc.get("complete"):
        step["measured_records"] = len(doc.get("measured") or [])
        step["progress"] = doc.get("progress")
        if step["status"] == "ok":
            step["status"] = "failed: returned without a complete JSON"
    skipped = [n for n in doc.get("notes") or [] if "skipped" in n]
    if skipped:
        step["notes_skipped"] = skipped
    return step


def _device(out: Path, simulate: bool) -> Any:
    if simulate:
        return "simulated"
    try:
        return json.loads((out / "doctor.json").read_text())["gpu"]["devices"]
    except Exception:  # noqa: BLE001 - the summary must still be written
        return None


def _summary(out: Path, steps: list[dict[str, Any]], complete: bool, meta: dict[str, Any]) -> dict[str, Any]:
    bad = [s["step"] for s in steps if not (s["status"] == "ok" or s["status"].startswith("skipped"))]
    summary = {"device": _device(out, meta.get("simulated", False)), **meta, "complete": complete,
               "steps": steps, "failed_steps": bad,
               "skipped_steps": [s["step"] for s in steps if s["status"].startswith("skipped")],
               "ok": complete and not bad}
    tmp = out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(out / "gpu_check.json")  # never a half-written file, whenever the check is killed
    return summary


def smoke_test_paths() -> list[str]:
    """SMOKE_TESTS with its globs expanded against the source tree (a pattern matching nothing drops out)."""
    paths: list[str] = []
    for pattern in SMOKE_TESTS:
        found = sorted(str(Path(p).relative_to(REPO)) for p in glob.glob(str(REPO / pattern)))
        paths += [p for p in found if p not in paths]
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--budget-s", type=float, default=None,
                    help=f"total wall-clock budget (default 480; {SMOKE_BUDGET_S:.0f} with --smoke)")
    ap.add_argument("--smoke", action="store_true", help="doctor, what ships' GPU tests, short readback and step")
    ap.add_argument("--simulate", action="store_true",
                    help="the same steps on the emulator's simulated device (CPU), smaller sizes")
    ap.add_argument("--lease", action="store_true", help="--smoke, then the full check in the time left, packed")
    ap.add_argument("--lease-s", type=float, default=540.0, help="with --lease: the whole run's wall clock")
    ap.add_argument("--test-timeout-s", type=float, default=None, help="limit per GPU test (default 120; 45 smoke)")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated benchmarks to run (default: all)")
    args = ap.parse_args(argv)
    if args.lease:
        from gpu_check_lease import run_lease

        return run_lease(Path(args.outdir), args.lease_s, args.simulate, main)
    return run_check(args)


def run_check(args: argparse.Namespace) -> int:
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    py, sim = sys.executable, args.simulate
    scale = SIMULATE_CAP_SCALE if sim else 1.0
    budget = args.budget_s or (SMOKE_BUDGET_S if args.smoke else 480.0) * scale
    deadline = time.monotonic() + budget
    device = "cpu" if sim else "cuda"
    smoke_caps = {p.name: p.cap_s for p in SMOKE_PLAN}
    meta = {"simulated": sim, "mode": "smoke" if args.smoke else "full", "budget_s": budget, "cap_scale": scale}
    steps: list[dict[str, Any]] = []

    def cap(name: str, full: float) -> float:
        wanted = (smoke_caps.get(name, full) if args.smoke else full) * scale
        return max(10.0, min(wanted, deadline - time.monotonic()))

    def record(step: dict[str, Any]) -> None:
        steps.append(step)
        _summary(out, steps, False, meta)

    def runnable(name: str) -> bool:
        why = missing(name) or ("not run: budget spent" if time.monotonic() > deadline - 15 else None)
        if why:
            record({"step": name, "status": why, "seconds": 0})
        return why is None

    record(_step("doctor", [py, "-m", "cc_runtime", "doctor", "--json"], cap("doctor", FULL_CAPS["doctor"]),
                 out / "doctor.log", stdout_path=out / "doctor.json", env=_env(sim)))
    if not args.skip_tests and runnable("gpu-tests"):
        paths = smoke_test_paths() if args.smoke else ["tests"]
        per_test = args.test_timeout_s or (45.0 if args.smoke else 120.0)
        env = _env(sim, SMOKE_TEST_ENV if args.smoke else None)
        record(run_gpu_tests(out, paths, cap("gpu-tests", FULL_CAPS["gpu-tests"]), per_test, py, env, _step))
    if not args.smoke and not args.only and runnable("calibrate"):
        # calibrate with CC off: the baseline profile of this GPU, kept as a result.
        record(_step("calibrate", [py, "-m", "cc_runtime", "calibrate", "--device", device, "--quick",
                                   "--out", str(out / "calibrate_cc_off.json")],
                     cap("calibrate", FULL_CAPS["calibrate"]), out / "calibrate.log", env=_env(sim)))
    names = ["readback", "step"] if args.smoke else ([b for b in args.only.split(",") if b] or list(BENCHMARKS))
    for name in names:
        if not runnable(f"bench-{name}"):
            continue
        json_path = out / f"{name}.json"
        extra = SMOKE_ARGS.get(name, []) if args.smoke else BENCH_ARGS.get(name, [])
        if sim:
            extra = [*extra, *SIMULATE_ARGS.get(name, [])]  # the same flags, then smaller sizes (last wins)
        cmd = [py, "-m", "cc_runtime", "bench", name, "--quick", "--device", device, "--json", str(json_path), *extra]
        step = _step(f"bench-{name}", cmd, cap(f"bench-{name}", FULL_CAPS["bench"]), out / f"bench_{name}.log",
                     env=_env(sim))
        record(_bench_record(step, json_path))
    summary = _summary(out, steps, True, meta)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
