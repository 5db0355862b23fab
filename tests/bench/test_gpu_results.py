"""Committed GPU results -> the patches' "GPU:" evidence, never typed by hand (cc_runtime.patching.gpu_evidence),
and ``scripts/import_gpu_results.py``, which puts a lease's results where that evidence is read from.

Stand-in: no GPU has run the check yet, so the "GPU run" here is a summary and benchmark JSONs written
in the shape ``benchmarks/gpu_check.py`` writes them (the rehearsal in test_gpu_check.py checks that
shape against the real check).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tarfile
from pathlib import Path

import pytest

from cc_runtime.patching import gpu_evidence as ge
from cc_runtime.patching.evidence import evidence_for

REPO = Path(__file__).resolve().parents[2]


def _run(folder: Path, device, files: dict, readback: dict | None = None) -> None:
    folder.mkdir(parents=True)
    summary = {"device": device, "simulated": device == "simulated", "complete": True,
               "steps": [{"step": "doctor", "status": "ok"}, {"step": "gpu-tests", "status": "ok", "files": files}]}
    (folder / "gpu_check.json").write_text(json.dumps(summary))
    if readback is not None:
        (folder / "readback.json").write_text(json.dumps(readback))


def test_no_gpu_folder_means_none_yet_in_this_repository():
    assert ge._device_folders(ge.RESULTS) == ()  # only cpu-simulated is committed today
    assert "GPU: none yet" in evidence_for("sglang.readback_coalesce").summary()


def test_gpu_evidence_is_read_from_passed_test_files_and_complete_cuda_benchmarks(tmp_path):
    root = tmp_path / "results"
    readback = {"complete": True, "environment": {"device_kind": "cuda"},
                "summary": {"ratio_vs_cc_off": 0.99, "sglang_worker_blocking_cpu_us_per_step": {"median": 20}}}
    _run(root / "nvidia-h100-80gb-hbm3", ["NVIDIA H100 80GB HBM3"],
         {"tests/readback/test_readback_worker_gpu.py": {"passed": 4},
          "tests/staging/test_stager_gpu.py": {"passed": 4, "failed": 1}}, readback)
    _run(root / "cpu-simulated", "simulated", {"tests/readback/test_readback_worker_gpu.py": {"passed": 4}})
    _run(root / "rehearsal", "simulated", {"tests/readback/test_readback_worker_gpu.py": {"passed": 4}})
    coalesce = ge.gpu_evidence("sglang.readback_coalesce", root)
    assert coalesce == (
        "NVIDIA H100 80GB HBM3: tests/readback/test_readback_worker_gpu.py "
        "(4 passed, benchmarks/results/nvidia-h100-80gb-hbm3/gpu_check.json)",
        "NVIDIA H100 80GB HBM3: bench readback (benchmarks/results/nvidia-h100-80gb-hbm3/readback.json)")
    assert ge.gpu_evidence("sglang.h2d_staging", root) == ()  # a failed test in the file: no evidence
    assert ge.gpu_evidence("sglang.d2h_worker_blocking_waits", root) == (
        "NVIDIA H100 80GB HBM3: bench readback (sglang_worker_blocking_cpu_us_per_step) "
        "(benchmarks/results/nvidia-h100-80gb-hbm3/readback.json)",)
    readback["complete"] = False  # a benchmark killed at its cap is not evidence
    (root / "nvidia-h100-80gb-hbm3" / "readback.json").write_text(json.dumps(readback))
    ge._device_folders.cache_clear()
    assert ge.gpu_evidence("sglang.d2h_worker_blocking_waits", root) == ()


def _importer():
    spec = importlib.util.spec_from_file_location("import_gpu_results", REPO / "scripts" / "import_gpu_results.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_gpu_results"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_import_takes_the_full_run_of_a_lease_pack_into_the_device_folder(tmp_path, monkeypatch):
    mod = _importer()
    monkeypatch.setattr(mod, "REPO", tmp_path / "repo")
    pack = tmp_path / "pack" / "gpu_check_results"
    _run(pack / "smoke", ["NVIDIA H100 80GB HBM3"], {})
    _run(pack / "full", ["NVIDIA H100 80GB HBM3"], {}, {"complete": True})
    (pack / "full" / "doctor.json").write_text("{}")
    (pack / "full" / "bench_readback.log").write_text("log")
    tgz = tmp_path / "gpu_check_results.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(pack, arcname="gpu_check_results")
    assert mod.main([str(tgz)]) == 0
    dest = tmp_path / "repo" / "benchmarks" / "results" / "nvidia-h100-80gb-hbm3"
    assert sorted(p.name for p in dest.iterdir()) == ["doctor.json", "gpu_check.json", "readback.json"]
    with pytest.raises(SystemExit, match="not a GPU run"):
        mod.device_folder({"device": "simulated", "simulated": True})
