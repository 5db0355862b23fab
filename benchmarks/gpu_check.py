#!/usr/bin/env python3
"""The project's GPU check: one command, run from the source tree on a GPU machine with no network.

    python benchmarks/gpu_check.py OUTDIR [--budget-s 480] [--skip-tests] [--only NAME,...]

Writes into OUTDIR: doctor.json, gpu_tests.xml (JUnit) + gpu_tests.log, one <benchmark>.json per
capability (CUDA device, emulated CC arms labelled as such) and gpu_check.json (the summary: each
step's status, seconds and headline metrics). Needs only what the device image has (torch, Triton,
cuda-python, nvidia-ml-py, wrapt, numpy, pytest, hypothesis); nothing is installed. Each step runs in
its own subprocess with a time limit, so one hang or crash cannot eat the whole device budget.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = ("emulator", "timer", "readback", "prefill")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("CC_RUNTIME_LOG_LEVEL", "INFO")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _step(name: str, cmd: list[str], timeout_s: float, log_path: Path, stdout_path: Path | None = None) -> dict:
    t0 = time.perf_counter()
    print(f"[gpu_check] {name}: {' '.join(cmd)} (limit {timeout_s:.0f}s)", flush=True)
    try:
        with open(log_path, "w") as log, open(stdout_path or os.devnull, "w") as stdout:
            rc = subprocess.run(cmd, cwd=REPO, env=_env(), stdout=stdout if stdout_path else log,
                                stderr=log, timeout=timeout_s).returncode
        status = "ok" if rc == 0 else ("no tests ran (exit 5)" if rc == 5 else f"failed (exit {rc})")
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout_s:.0f}s"
    seconds = round(time.perf_counter() - t0, 1)
    tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
    print(f"[gpu_check] {name}: {status} in {seconds}s\n{tail}", flush=True)
    return {"step": name, "status": status, "seconds": seconds, "log": log_path.name}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--budget-s", type=float, default=480.0, help="total wall-clock budget for all steps")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated benchmarks to run (default: all)")
    args = ap.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    py = sys.executable
    steps = []

    def left(cap: float) -> float:
        return max(10.0, min(cap, deadline - time.monotonic()))

    steps.append(_step("doctor", [py, "-m", "cc_runtime", "doctor", "--json"], left(60), out / "doctor.log",
                       stdout_path=out / "doctor.json"))
    if not args.skip_tests:
        steps.append(_step("gpu-tests", [py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                                         f"--junitxml={out / 'gpu_tests.xml'}", "tests"],
                           left(180), out / "gpu_tests.log"))
        # HiCache host KV pool allocation under CC (cudaHostAlloc instead of cudaHostRegister), on its own line.
        steps.append(_step("gpu-hicache-host-pool", [py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                                                     "-k", "hicache", "tests/readback/test_cc_patches_gpu.py"],
                           left(60), out / "gpu_hicache_host_pool.log"))
    only = [b for b in args.only.split(",") if b] or list(BENCHMARKS)
    for name in only:
        if time.monotonic() > deadline - 15:
            steps.append({"step": f"bench-{name}", "status": "not run: budget spent", "seconds": 0})
            continue
        json_path = out / f"{name}.json"
        step = _step(f"bench-{name}", [py, "-m", "cc_runtime", "bench", name, "--quick", "--device", "cuda",
                                       "--json", str(json_path)], left(150), out / f"bench_{name}.log")
        if json_path.exists():
            try:
                step["summary"] = json.loads(json_path.read_text()).get("summary")
            except ValueError as exc:
                step["summary"] = f"unreadable JSON: {exc}"
        steps.append(step)

    device = None
    try:
        device = json.loads((out / "doctor.json").read_text())["gpu"]["devices"]
    except Exception:  # noqa: BLE001 - the summary must still be written
        pass
    summary = {"device": device, "steps": steps,
               "ok": all(s["status"] == "ok" for s in steps)}
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
