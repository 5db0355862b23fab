#!/usr/bin/env python3
"""Commit a lent GPU's check results: copy them under ``benchmarks/results/<device>/``.

    python scripts/import_gpu_results.py gpu_check_results.tar.gz   # or an extracted folder, or one run's folder

Takes the full run of a lease's pack (``gpu_check_results/full``), or its smoke run where the full run
did not complete, names the folder after the summary's device (``NVIDIA H100 80GB HBM3`` ->
``nvidia-h100-80gb-hbm3``) and copies the summary, doctor.json, the GPU tests' events and every
benchmark JSON (complete or not: an incomplete one says so itself). Refuses a simulated run. Then
regenerate the README's tables: ``PYTHONPATH=$PWD python -m cc_runtime.docs README.md``.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEEP = ("gpu_check.json", "doctor.json", "gpu_tests.jsonl", "calibrate_cc_off.json")


def device_folder(summary: dict) -> str:
    device = summary.get("device")
    if isinstance(device, list):
        device = device[0] if device else None
    if isinstance(device, dict):
        device = device.get("name")
    if not device or device == "simulated" or summary.get("simulated"):
        raise SystemExit(f"import_gpu_results: not a GPU run (device: {device!r})")
    return re.sub(r"[^a-z0-9]+", "-", str(device).lower()).strip("-")


def _pick(root: Path) -> Path:
    if (root / "gpu_check.json").exists():
        return root
    for part in ("full", "smoke"):
        for cand in (root / part, root / "gpu_check_results" / part):
            summary = cand / "gpu_check.json"
            if summary.exists() and (part == "smoke" or json.loads(summary.read_text()).get("complete")):
                return cand
    raise SystemExit(f"import_gpu_results: no gpu_check.json under {root}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    src = Path(argv[0])
    with tempfile.TemporaryDirectory() as tmp:
        if src.is_file():
            with tarfile.open(src) as tar:
                tar.extractall(tmp, filter="data")
            src = Path(tmp)
        run = _pick(src)
        summary = json.loads((run / "gpu_check.json").read_text())
        dest = REPO / "benchmarks" / "results" / device_folder(summary)
        dest.mkdir(parents=True, exist_ok=True)
        names = [n for n in KEEP if (run / n).exists()]
        names += sorted(p.name for p in run.glob("*.json") if p.name not in names)
        for name in names:
            shutil.copy2(run / name, dest / name)
        print(f"{len(names)} files from {run.name} -> {dest.relative_to(REPO)}: {', '.join(names)}")
    print("now: PYTHONPATH=$PWD python -m cc_runtime.docs README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
