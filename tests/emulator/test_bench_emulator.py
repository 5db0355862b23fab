"""``cc-runtime bench emulator`` on the simulated device: result shape and labels (no timing asserts)."""

from __future__ import annotations

import json

import pytest

from cc_runtime.bench import emulator as bench
from cc_runtime.bench import run_one, write_json
from cc_runtime.bench.common import BenchContext


@pytest.mark.timeout(120)
def test_quick_run_on_the_simulated_device(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench, "QUICK_SIZES", [64, 64 * 1024])
    ctx = BenchContext(quick=True, device="cpu", emulate="b300", extra={"reps": 2})
    result = run_one("emulator", ctx)
    assert result.environment["device_kind"] == "simulated"
    assert result.environment["cc"] == "emulated:b300"
    assert "simulated" in result.title
    s = result.summary
    assert s["simulated"] == 1 and s["max_rel_error_vs_model"] >= 0
    assert s["launch_extra_us_model"] == pytest.approx(5.0)
    assert 0 < s["event_negative_fraction"] < 1
    assert [(r["direction"], r["bytes"]) for r in result.rows] == [
        ("h2d", 64), ("d2h", 64), ("h2d", 65536), ("d2h", 65536), ("launch", 0)]
    assert s["max_rel_error_vs_model"] == max(r["rel_error"] for r in result.rows[:4])
    path = tmp_path / "emu.json"
    write_json(str(path), result)
    data = json.loads(path.read_text())
    assert set(data) >= {"benchmark", "environment", "summary", "rows"} and data["benchmark"] == "emulator"


@pytest.mark.timeout(120)
def test_plot_is_written_when_asked(tmp_path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(bench, "QUICK_SIZES", [64, 4096])
    png = tmp_path / "emu.png"
    bench.run(BenchContext(quick=True, device="cpu", plot_path=str(png), extra={"reps": 1}))
    assert png.stat().st_size > 1000
