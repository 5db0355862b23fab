"""``cc-runtime bench`` output: goals met or missed beside each headline, progress, written files, plots.

The benchmarks themselves are replaced by two scripted modules (their timings are not what is tested
here); the goal table, the printing and the writing are the real ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import types

import pytest

from cc_runtime import bench
from cc_runtime.bench.common import BenchResult, progress, spread
from cc_runtime.bench.goals import GOALS, judged, markdown_table


def _module(name: str, summary: dict) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.DESCRIPTION = "scripted"

    def run(ctx):
        return BenchResult(benchmark=name.rsplit("_", 1)[-1], summary=summary, rows=[{"a": 1}],
                           model={"x": {"value": 2, "source": "assumed"}})

    mod.run = run
    return mod


@pytest.fixture
def scripted(monkeypatch):
    readback = _module("scripted_readback", {"ratio_vs_cc_off": spread([0.90, 0.91, 0.93]),
                                              "readback_errors": 0})
    timer = _module("scripted_timer", {"fake_clock_ranking_accuracy": 1.0})
    monkeypatch.setitem(sys.modules, "scripted_readback", readback)
    monkeypatch.setitem(sys.modules, "scripted_timer", timer)
    monkeypatch.setattr(bench, "BENCHMARKS", {"readback": "scripted_readback", "timer": "scripted_timer"})


def _args(tmp_path, **kw) -> argparse.Namespace:
    base = dict(quick=True, long=False, json_path=str(tmp_path / "json"), plot_path=str(tmp_path / "plots"),
                device="cpu", emulate="h100", seed=0, cmd="bench", bench_name=None)
    return argparse.Namespace(**{**base, **kw})


def test_goals_judge_the_median_and_say_when_a_key_is_missing():
    s = {"ratio_vs_cc_off": spread([0.94, 0.96, 0.99]), "readback_errors": 0}
    rows = {r["goal"]: r for r in judged("readback", "simulated", s)}
    assert rows["ratio_vs_cc_off >= 0.95"]["result"] == "met"
    assert rows["ratio_vs_cc_off >= 0.95"]["value"] == "0.96 [0.94-0.99]"
    assert rows["readback_errors == 0"]["result"] == "met"
    assert rows["worker_own_cpu_us_per_step <= 30"]["result"] == "n/a"
    assert judged("readback", "simulated", {"ratio_vs_cc_off": spread([0.9])})[0]["result"] == "MISSED"
    assert "ratio_vs_cc_off >= 0.98" in {r["goal"] for r in judged("readback", "cuda", s)}


def test_the_readme_goal_table_lists_every_goal():
    table = markdown_table()
    for g in GOALS:
        assert f"| `{g.benchmark}` | `{g.key}` | `{g.op} {g.target:g}` | {g.device} |" in table


def test_bench_all_marks_goals_and_lists_every_file_it_wrote(scripted, tmp_path, capsys):
    assert bench.run_all(_args(tmp_path)) == 0
    out, err = capsys.readouterr()
    table = out[out.index("cc-runtime bench (quick"):]
    line = next(ln for ln in table.splitlines() if "ratio_vs_cc_off >= 0.95" in ln)
    assert "MISSED" in line and "0.91 [0.9-0.93]" in line
    assert "met" in next(ln for ln in table.splitlines() if "fake_clock_ranking_accuracy" in ln)
    for name in ("readback", "timer"):
        assert (tmp_path / "json" / f"{name}.json").exists()
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 0, "one PNG per benchmark"
        assert out.count(f"wrote {tmp_path / 'json' / f'{name}.json'}") == 1  # listed once, not again at the end
        assert out.count(f"wrote {tmp_path / 'plots' / f'{name}.png'}") == 1
        assert f"{name} ..." in err and f"{name} done in" in err
    saved = json.loads((tmp_path / "json" / "readback.json").read_text())
    assert saved["model"] == {"x": {"value": 2, "source": "assumed"}}


def test_single_bench_rounds_its_summary_and_marks_its_goals(scripted, tmp_path, capsys):
    assert bench.main_bench(_args(tmp_path, bench_name="readback", json_path=str(tmp_path / "r.json"),
                                  plot_path=str(tmp_path / "r.png"))) == 0
    out = capsys.readouterr().out
    assert "ratio_vs_cc_off=0.91 [0.9-0.93]" in out
    assert "goal: ratio_vs_cc_off >= 0.95: 0.91 [0.9-0.93] -> MISSED" in out
    assert f"wrote {tmp_path / 'r.json'}" in out and f"wrote {tmp_path / 'r.png'}" in out


def test_progress_reports_on_a_pipe(capsys):
    assert list(progress(range(3), desc="thing", every_s=0.0)) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "thing: 1/3" in err and "thing: 2/3" in err


def test_lists_and_mappings_print_rounded():
    """A model entry may be a list or mapping of floats (device time per batch size): printed rounded,
    like every other figure, not as Python's repr (0.0030800000000000003)."""
    from cc_runtime.bench.common import fmt_spread

    assert fmt_spread([0.003005, 0.0030800000000000003]) == "[0.003, 0.00308]"
    assert fmt_spread({"base": 500.0, "per_request": 2.0}) == "{base: 500.0, per_request: 2}"
    assert fmt_spread({"value": 0.2125, "n": 80}) == "0.212"
