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
                device="cpu", emulate="h100", seed=0, cmd="bench", bench_name=None, check=False)
    return argparse.Namespace(**{**base, **kw})


def test_goals_judge_the_whole_spread_and_say_when_a_key_is_missing():
    s = {"ratio_vs_cc_off": spread([0.94, 0.96, 0.99]), "readback_errors": 0}
    rows = {r["goal"]: r for r in judged("readback", "simulated", s)}
    # A median above the threshold with one repetition below it is not met: the spread straddles it.
    assert rows["ratio_vs_cc_off >= 0.95"]["result"] == "inconclusive (noise)"
    assert rows["ratio_vs_cc_off >= 0.95"]["value"] == "0.96 [0.94-0.99]"
    assert rows["readback_errors == 0"]["result"] == "met"
    assert rows["worker_cpu_over_floor_us_per_step <= 100"]["result"] == "n/a"
    assert judged("readback", "simulated", {"ratio_vs_cc_off": spread([0.9])})[0]["result"] == "MISSED"
    assert judged("readback", "simulated", {"ratio_vs_cc_off": spread([0.95, 0.97])})[0]["result"] == "met"
    assert "ratio_vs_cc_off >= 0.99" in {r["goal"] for r in judged("readback", "cuda", s)}


@pytest.mark.parametrize(("values", "op", "target", "expected"), [
    ([0.96, 0.97, 0.99], ">=", 0.95, "met"),
    ([0.95, 0.97], ">=", 0.95, "met"),  # the threshold itself is on the right side
    ([0.90, 0.93, 0.94], ">=", 0.95, "MISSED"),
    ([0.939, 1.01, 0.952], ">=", 0.95, "inconclusive (noise)"),  # the three runs that flipped
    ([-290.0, 10.0, 234.0], "<=", 30.0, "inconclusive (noise)"),  # a median that met, a spread that did not
    ([5.0, 29.0], "<=", 30.0, "met"),
    ([31.0, 40.0], "<=", 30.0, "MISSED"),
    ([0.0, 0.0], "==", 0.0, "met"),
    ([1.0, 2.0], "==", 0.0, "MISSED"),
    ([0.0, 2.0], "==", 0.0, "inconclusive (noise)"),
])
def test_a_verdict_takes_the_whole_spread(values, op, target, expected):
    from cc_runtime.bench.verdicts import verdict

    assert verdict(spread(values), op, target) == expected


def test_a_single_value_is_met_or_missed_and_nothing_measured_is_na():
    from cc_runtime.bench.verdicts import verdict

    assert verdict(3, "==", 3.0) == "met" and verdict(2, "==", 3.0) == "MISSED"
    assert verdict({"value": 0.97, "n": 80}, ">=", 0.95) == "met"
    assert verdict(None, ">=", 0.95) == "n/a" and verdict("text", ">=", 0.95) == "n/a"
    assert verdict(spread([float("nan")]), ">=", 0.95) == "n/a"


def test_check_exits_1_on_a_missed_goal_and_plain_bench_still_exits_0(scripted, tmp_path, capsys):
    # The scripted readback's ratio_vs_cc_off [0.90-0.93] misses ">= 0.95" in every repetition.
    assert bench.run_all(_args(tmp_path)) == 0
    assert bench.run_all(_args(tmp_path, check=True)) == 1
    assert bench.main_bench(_args(tmp_path, bench_name="readback", json_path=None, plot_path=None)) == 0
    assert bench.main_bench(_args(tmp_path, bench_name="readback", json_path=None, plot_path=None,
                                  check=True)) == 1
    assert bench.main_bench(_args(tmp_path, bench_name="timer", json_path=None, plot_path=None, check=True)) == 0
    assert "1 benchmark(s) with a MISSED goal" in capsys.readouterr().err


def test_check_does_not_fail_an_inconclusive_goal(monkeypatch, tmp_path):
    noisy = _module("noisy_readback", {"ratio_vs_cc_off": spread([0.94, 0.96, 0.99]), "readback_errors": 0})
    monkeypatch.setitem(sys.modules, "noisy_readback", noisy)
    monkeypatch.setattr(bench, "BENCHMARKS", {"readback": "noisy_readback"})
    assert bench.run_all(_args(tmp_path, check=True)) == 0


def test_every_result_records_the_machine_load_before_and_after(scripted, tmp_path):
    assert bench.main_bench(_args(tmp_path, bench_name="readback", json_path=str(tmp_path / "r.json"),
                                  plot_path=None)) == 0
    load = json.loads((tmp_path / "r.json").read_text())["environment"]["load"]
    for when in ("before", "after"):
        assert len(load[when]["loadavg"]) == 3
        if load[when]["proc_stat_ticks"] is not None:
            assert "steal" in load[when]["proc_stat_ticks"]
    assert "steal_pct" in load and "busy_pct" in load


def test_load_over_a_run_is_the_share_of_ticks_between_the_snapshots():
    from cc_runtime.bench.machine_load import over_run

    ticks = dict(user=100, nice=0, system=50, idle=800, iowait=10, irq=0, softirq=0, steal=40)
    later = {**ticks, "user": 160, "idle": 820, "steal": 60}  # +60 user, +20 idle, +20 steal: 100 ticks
    load = over_run({"time": 0.0, "proc_stat_ticks": ticks}, {"time": 2.0, "proc_stat_ticks": later})
    assert load["steal_pct"] == 20.0 and load["busy_pct"] == 80.0 and load["seconds"] == 2.0


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


@pytest.mark.parametrize(("argv", "check"), [
    (["bench"], False), (["bench", "--check"], True), (["bench", "--check", "readback"], True),
    (["bench", "readback", "--check"], True), (["bench", "readback"], False)])
def test_check_is_read_before_or_after_the_benchmark_name(argv, check):
    p = argparse.ArgumentParser()
    bench.add_bench_parser(p.add_subparsers(dest="cmd"))
    assert getattr(p.parse_args(argv), "check", False) is check


def test_a_result_taken_on_a_loaded_machine_says_so():
    from cc_runtime.bench.machine_load import busy_note

    def snap(avg):
        return {"cpu_count": 2, "loadavg": [avg, 1.0, 1.0]}

    assert busy_note({"before": snap(0.5), "after": snap(1.9)}) is None
    note = busy_note({"before": snap(11.2), "after": snap(13.5), "busy_pct": 100.0, "steal_pct": 0.6})
    assert note and "11.2-13.5 on 2 cores" in note and "contention" in note
