"""`cc-runtime bench timer` on CPU: the simulated path (fake clock for the GPU and %globaltimer)."""

from __future__ import annotations

import json

import pytest

from cc_runtime.bench.common import BenchContext
from cc_runtime.bench.timer import agreement_row, peer_bound_ms, run


@pytest.mark.timeout(120)
def test_cpu_bench_names_fake_clock_results_and_models_its_constants():
    pytest.importorskip("cc_runtime.emulator.events")
    result = run(BenchContext(quick=True, device="cpu", emulate="h100"))
    assert "SIMULATED" in result.title
    assert any("simulated" in n for n in result.notes)
    s, m = result.summary, result.model
    # No summary key reads as a device measurement: fake-clock results say so in their name.
    assert {"ranking_accuracy", "max_rel_diff_vs_events", "granularity_us", "stamp_overhead_us"}.isdisjoint(s)
    trials = {r["trials"] for r in result.rows if r["part"] == "ranking"}
    assert s["fake_clock_ranking_accuracy"]["value"] >= 0.95
    assert s["fake_clock_ranking_accuracy_events"]["value"] < 0.6
    assert {s["fake_clock_ranking_accuracy"]["n"], s["fake_clock_ranking_accuracy_events"]["n"]} == trials
    # Configuration (trial counts) is not a summary figure: each count travels with the value it counts.
    assert {"ranking_trials", "agreement_trials"}.isdisjoint(s)
    fake = s["fake_clock_max_rel_diff_vs_events"]
    assert 0 <= fake["min"] <= fake["median"] <= fake["max"] < 0.02 and fake["n"] >= 3
    wall = s["wall_clock_rel_diff_vs_perf_counter"]
    assert wall["n"] >= 5 and "wall clock" in wall["kernel"]
    assert m["granularity_us"] == {"value": 0.032, "source": m["granularity_us"]["source"]}
    assert "fake timer setting" in m["stamp_overhead_us"]["source"]
    parts = {r["part"] for r in result.rows}
    assert {"agreement", "ranking"} <= parts
    modes = {r["mode"] for r in result.rows if r["part"] == "agreement"}
    assert modes == {"eager", "graph"}
    json.dumps(result.as_json(), default=str)  # serialisable as the framework writes it


def test_agreement_row_spreads_the_per_trial_difference():
    row = agreement_row("k", "eager", [1.0, 2.0, 1.0], [1.1, 2.0, 0.8], 1)
    assert row["rel_diff_trials"]["median"] == pytest.approx(0.1)
    assert (row["rel_diff_trials"]["min"], row["rel_diff_trials"]["max"]) == pytest.approx((0.0, 0.2))
    assert row["rel_diff"] == pytest.approx(abs(3.9 - 4.0) / 4.0)


def test_peer_bound_matches_flashinfer_rule():
    ev, gt = [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]
    assert peer_bound_ms(ev, gt) == pytest.approx(0.05)  # 5% of the event mean wins here
    assert peer_bound_ms([0.1, 0.1], [0.1, 0.1]) == pytest.approx(0.01)  # 0.01 ms floor
    assert agreement_row("k", "eager", [1.0, 1.0], [1.06, 1.06], 1)["peer_bound"] == "FAIL"
    assert agreement_row("k", "eager", [1.0, 1.0], [1.04, 1.04], 1)["peer_bound"] == "ok"
