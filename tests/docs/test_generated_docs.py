"""Generated doc blocks (README.md and docs/): measured figures from committed result JSON, the patch table's
evidence column, and ``cc-runtime patches --json`` rows carrying the same evidence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cc_runtime import docs
from cc_runtime.patching import Evidence

REPO = Path(__file__).resolve().parents[2]


def _write(root: Path, rel: str, data: dict) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_measured_figures_come_from_the_committed_json_with_their_spread(tmp_path):
    _write(tmp_path, "benchmarks/results/cpu-simulated/readback.json", {
        "benchmark": "readback", "environment": {"device_kind": "simulated", "cc": "emulated:h100"},
        "summary": {"ratio_vs_cc_off": {"median": 0.93, "min": 0.9, "max": 1.02, "n": 5, "batch": 256,
                                        "reading": "within noise"}, "readback_errors": 0,
                    "note": "text is not a figure"},
        "model": {"step_ms": {"value": 3.0, "source": "configured"}},
    })
    _write(tmp_path, "benchmarks/results/cpu-simulated/emulator.json", {
        "benchmark": "emulator", "environment": {"device_kind": "simulated"},
        "summary": {"event_invalid_fraction": {"value": 0.2125, "n": 80}}})
    table = docs.measured_figures(tmp_path)
    line = next(ln for ln in table.splitlines() if "`ratio_vs_cc_off`" in ln)
    assert "0.93 [0.9-1.02] (above 1.0: noise, not a gain)" in line and "| 5 |" in line
    assert "ratio_vs_cc_off >= 0.95: inconclusive (noise)" in line  # the spread straddles 0.95
    assert "simulated, CC emulated:h100" in line and "| batch 256 |" in line
    assert "readback_errors == 0: met" in table
    assert "step_ms" not in table, "model values are not measured figures"
    assert "note" not in table
    # A count shows its value, its n in the n column (not the dict's repr).
    assert "| `event_invalid_fraction` | 0.212 | 80 |" in table
    # The figures follow the file: change it and the README block changes.
    _write(tmp_path, "benchmarks/results/cpu-simulated/readback.json", {
        "benchmark": "readback", "environment": {"device_kind": "simulated"},
        "summary": {"ratio_vs_cc_off": {"median": 0.97, "min": 0.96, "max": 0.99, "n": 3}}})
    assert "0.97 [0.96-0.99]" in docs.measured_figures(tmp_path)


def test_the_repository_figures_block_matches_the_committed_results():
    page = (REPO / "docs" / "benchmarks.md").read_text()
    for path in sorted((REPO / "benchmarks/results").glob("*/*.json")):
        if "benchmark" not in json.loads(path.read_text()):
            continue  # a calibrated profile, not a benchmark result
        rel = path.relative_to(REPO).as_posix()
        assert f"`{rel}`" in page, f"{rel} is not in docs/benchmarks.md's measured figures"


def test_the_readme_results_table_shows_each_judged_goal_with_its_source(tmp_path):
    _write(tmp_path, "benchmarks/results/cpu-simulated/readback.json", {
        "benchmark": "readback", "environment": {"device_kind": "simulated", "cc": "emulated:h100"},
        "summary": {"ratio_vs_cc_off": {"median": 0.93, "min": 0.9, "max": 0.94, "n": 5},
                    "uncorrected_ratio_vs_cc_off": {"median": 0.7, "min": 0.6, "max": 0.8, "n": 5}}})
    table = docs.results_table(tmp_path)
    row = next(ln for ln in table.splitlines() if "`ratio_vs_cc_off`" in ln)
    assert "| 0.93 [0.9-0.94] | 5 | `>= 0.95` | MISSED | simulated, CC emulated:h100 |" in row
    assert row.endswith("[`cpu-simulated/readback.json`](benchmarks/results/cpu-simulated/readback.json) |")
    assert "uncorrected_ratio_vs_cc_off" not in table, "only goal keys: the rest is in docs/benchmarks.md"
    assert docs.results_table(tmp_path / "empty").startswith("(no committed results")


def test_patch_table_has_an_evidence_column_from_each_patchs_record():
    from cc_runtime.patches import all_patches

    table = docs.patch_table()
    assert table.splitlines()[0].endswith("| evidence |")
    for p in all_patches():
        row = next(ln for ln in table.splitlines() if ln.startswith(f"| `{p.name}` |"))
        assert row.endswith(f"| {p.verified_by().summary()} |")
        assert "GPU: none yet / CC hardware: none yet" in row  # no device run has verified a patch yet


def test_an_explicit_evidence_field_wins_over_the_table():
    from cc_runtime.patching import Patch

    ev = Evidence(gpu=("NVIDIA H100: benchmarks/results/nvidia-h100/readback.json",))
    p = Patch(name="sglang.readback_coalesce", target="sglang", versions=">=0", summary="", upstream="",
              apply=lambda ctx: None, evidence=ev)
    assert p.verified_by() is ev and ev.level() == "gpu"
    assert "GPU: NVIDIA H100: benchmarks/results/nvidia-h100/readback.json" in ev.summary()
    assert Evidence().summary() == "CPU: none yet / GPU: none yet / CC hardware: none yet"


def test_cli_patches_json_rows_carry_evidence():
    out = subprocess.run([sys.executable, "-m", "cc_runtime", "patches", "--json"], capture_output=True,
                         text=True, timeout=120, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows and all({"level", "cpu", "gpu", "cc_hardware"} <= set(r["evidence"]) for r in rows)
    coalesce = next(r for r in rows if r["name"] == "sglang.readback_coalesce")
    assert coalesce["evidence"]["level"] == "cpu" and coalesce["evidence"]["gpu"] == []
    assert any("SGLang 0.5.23" in s for s in coalesce["evidence"]["cpu"])
    text = subprocess.run([sys.executable, "-m", "cc_runtime", "patches"], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert "verified on" in text.stdout.splitlines()[0]
