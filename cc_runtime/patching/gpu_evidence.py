"""A patch's "GPU:" evidence, read from the committed GPU check results, never typed by hand.

``benchmarks/gpu_check.py`` writes ``gpu_check.json`` (each GPU test file's outcomes) and one JSON per
benchmark; ``scripts/import_gpu_results.py`` commits them under ``benchmarks/results/<device>/``. A patch
has GPU evidence from a device folder when a GPU test file that exercises it ran there with every test
passed or skipped and at least one passed, or a benchmark that exercises it left a complete JSON there
(with the summary key that measures it, where one is named). ``cpu-simulated`` and any run whose summary
says ``device: simulated`` are not GPU evidence. With no such folder (an installed package has none),
every patch reads "none yet".
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

_READBACK = ("tests/readback/test_readback_worker_gpu.py", "readback")
_STAGING = ("tests/staging/test_stager_gpu.py", "step")
_TIMER = ("tests/timer/test_timer_gpu.py", "timer")
_SNAPSHOT = ("tests/readback/test_cc_patches_gpu.py",)
_GRAPHS = ("tests/graphs/test_piecewise_graphs_gpu.py", "prefill")

#: What exercises each patch on a GPU: test files (``tests/...``), benchmarks by name, or
#: ``benchmark:summary_key`` where only one arm of a benchmark does.
COVERAGE: dict[str, tuple[str, ...]] = {
    "sglang.readback_worker": _READBACK,
    "sglang.readback_coalesce": _READBACK,
    "sglang.d2h_worker_blocking_waits": ("readback:sglang_worker_blocking_cpu_us_per_step",),
    "sglang.readback_snapshot_worker": _SNAPSHOT,
    "sglang.readback_snapshot": _SNAPSHOT,
    "sglang.hicache_host_pool": _SNAPSHOT,
    "sglang.hicache_host_pool_inline": _SNAPSHOT,
    "sglang.h2d_staging": _STAGING,
    "sglang.h2d_staging_primitives": _STAGING,
    "triton.autotune_timer": _TIMER,
    "inductor.benchmarker_timer": _TIMER,
    "emulation": ("tests/emulator/test_emulator_gpu.py", "emulator"),
    "sglang.prefill_graphs_0_5_12": _GRAPHS,
    "sglang.prefill_graphs_0_5_23": _GRAPHS,
}


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _device_name(summary: dict[str, Any], folder: str) -> str:
    device = summary.get("device")
    if isinstance(device, list) and device:
        device = device[0]
    if isinstance(device, dict):
        device = device.get("name")
    return str(device) if device else folder


@functools.lru_cache(maxsize=4)
def _device_folders(root: Path) -> tuple[tuple[str, str, dict[str, Any]], ...]:
    """(folder, device name, gpu_check summary) for every committed GPU run under ``root``."""
    found = []
    if not root.is_dir():
        return ()
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "cpu-simulated"):
        summary = _load(folder / "gpu_check.json")
        if summary is None or summary.get("simulated") or summary.get("device") in (None, "simulated"):
            continue
        found.append((folder.name, _device_name(summary, folder.name), summary))
    return tuple(found)


def _test_file_passed(summary: dict[str, Any], test_file: str) -> int:
    """How many tests of ``test_file`` passed in that run (0 when any did not pass or skip)."""
    for step in summary.get("steps", []):
        counts = (step.get("files") or {}).get(test_file) if step.get("step") == "gpu-tests" else None
        if counts:
            if set(counts) - {"passed", "skipped"}:
                return 0
            return int(counts.get("passed", 0))
    return 0


def gpu_evidence(name: str, root: Path | None = None) -> tuple[str, ...]:
    """The statements the committed GPU results back for patch ``name`` (empty: "none yet")."""
    root = root or RESULTS
    statements: list[str] = []
    for folder, device, summary in _device_folders(root):
        rel = f"benchmarks/results/{folder}"
        for item in COVERAGE.get(name, ()):
            if item.startswith("tests/"):
                passed = _test_file_passed(summary, item)
                if passed:
                    statements.append(f"{device}: {item} ({passed} passed, {rel}/gpu_check.json)")
                continue
            bench, _, key = item.partition(":")
            data = _load(root / folder / f"{bench}.json")
            if data and data.get("complete", True) and data.get("environment", {}).get("device_kind") == "cuda" \
                    and (not key or key in (data.get("summary") or {})):
                statements.append(f"{device}: bench {bench}{f' ({key})' if key else ''} ({rel}/{bench}.json)")
    return tuple(statements)
