"""``gpu_check.py --lease OUTDIR``: the one command for a lent GPU machine (docs/gpu-check.md).

``--smoke`` first (150 s budget), then the full check with whatever is left of ``--lease-s``, each into
its own folder under a work directory beside OUTDIR's files; after each part, everything is packed into
OUTDIR as at most four files (the lease returns at most 8 files, 2 folders deep): the two summaries,
``gpu_check_results.tar.gz`` (every file of both parts) and ``lease.json`` (timings of the parts).
Packing after each part means a machine taken back half-way still returns the smoke run.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PACK_S = 20.0  # packing and the interpreter's exit, kept out of the full check's budget
MIN_FULL_S = 60.0  # below this the full check would only run doctor: skip it


def _pack(work: Path, out: Path, parts: dict[str, dict[str, float]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "gpu_check_results.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(work, arcname="gpu_check_results")
    tmp.replace(out / "gpu_check_results.tar.gz")
    for part in ("smoke", "full"):
        summary = work / part / "gpu_check.json"
        if summary.exists():
            (out / f"{part}_gpu_check.json").write_text(summary.read_text())
    (out / "lease.json").write_text(json.dumps(parts, indent=2) + "\n")


def run_lease(out: Path, lease_s: float, simulate: bool, main: Callable[[list[str]], int]) -> int:
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="cc_gpu_check_"))
    sim = ["--simulate"] if simulate else []
    parts: dict[str, dict[str, float]] = {}
    rc = main([str(work / "smoke"), "--smoke", *sim])
    parts["smoke"] = {"rc": rc, "seconds": round(time.monotonic() - t0, 1)}
    _pack(work, out, parts)
    left = lease_s - (time.monotonic() - t0) - PACK_S
    if left >= MIN_FULL_S:
        t1 = time.monotonic()
        rc_full = main([str(work / "full"), "--budget-s", f"{left:.0f}", *sim])
        parts["full"] = {"rc": rc_full, "seconds": round(time.monotonic() - t1, 1), "budget_s": round(left)}
        rc = rc or rc_full
    else:
        parts["full"] = {"rc": -1, "seconds": 0.0, "budget_s": round(left)}
        print(f"[gpu_check] lease: {left:.0f}s left after the smoke run; the full check needs {MIN_FULL_S:.0f}s",
              flush=True)
    _pack(work, out, parts)
    print(f"[gpu_check] lease: {time.monotonic() - t0:.0f}s; results packed in {out}", flush=True)
    return rc
