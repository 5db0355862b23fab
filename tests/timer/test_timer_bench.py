"""`cc-runtime bench timer` on CPU: the simulated path (fake clock for the GPU and %globaltimer)."""

from __future__ import annotations

import json

import pytest

from cc_runtime.bench.common import BenchContext
from cc_runtime.bench.timer import agreement_row, peer_bound_ms, run


@pytest.mark.timeout(120)
def test_cpu_bench_is_simulated_and_reports_the_contract_keys():
    pytest.importorskip("cc_runtime.emulator.events")
    result = run(BenchContext(quick=True, device="cpu", emulate="h100"))
    assert "SIMULATED" in result.title
    assert any("simulated" in n for n in result.notes)
    s = result.summary
    assert s["ranking_accuracy"] == 1.0
    assert s["ranking_accuracy_events"] < 0.6
    assert 0 <= s["max_rel_diff_vs_events"] < 0.02
    parts = {r["part"] for r in result.rows}
    assert {"agreement", "ranking"} <= parts
    modes = {r["mode"] for r in result.rows if r["part"] == "agreement"}
    assert modes == {"eager", "graph"}
    json.dumps(result.as_json(), default=str)  # serialisable as the framework writes it


def test_peer_bound_matches_flashinfer_rule():
    ev, gt = [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]
    assert peer_bound_ms(ev, gt) == pytest.approx(0.05)  # 5% of the event mean wins here
    assert peer_bound_ms([0.1, 0.1], [0.1, 0.1]) == pytest.approx(0.01)  # 0.01 ms floor
    assert agreement_row("k", "eager", [1.0, 1.0], [1.06, 1.06], 1)["peer_bound"] == "FAIL"
    assert agreement_row("k", "eager", [1.0, 1.0], [1.04, 1.04], 1)["peer_bound"] == "ok"
