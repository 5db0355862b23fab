"""``cc-runtime bench step`` on the simulated device: structure, counts and correctness (no timing claims)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from cc_runtime.bench.common import BenchContext  # noqa: E402


def test_step_bench_counts_crossings_and_reports_spreads():
    from cc_runtime.bench import step

    ctx = BenchContext(quick=True, device="cpu", emulate="h100",
                       extra={"batch_sizes": "4", "prefill_tokens": "1024", "steps": 6, "reps": 2})
    result = step.run(ctx)
    s = result.summary
    for key in ("ratio_vs_cc_off", "ratio_vs_cc_off_readback_only", "uncorrected_ratio_vs_cc_off",
                "h2d_transfers_per_step", "d2h_transfers_per_step", "scheduler_cpu_us_per_step"):
        assert set(s[key]) >= {"median", "min", "max", "n"}, key
    assert s["errors"] == 0, "every input and every read-back token must be the one written for its step"
    assert s["h2d_transfers_per_step"]["max"] == 1.0, "decode: one staged crossing per step"
    assert s["h2d_transfers_per_step_prefill"]["max"] == 1.0
    assert s["h2d_transfers_per_step_upstream"]["max"] == 7.0  # prefill: 7 inline input copies upstream
    assert s["d2h_transfers_per_step"]["max"] == 1.0
    assert {r["loop"] for r in result.rows} == {"decode", "prefill"}
    assert all("source" in v for v in result.model.values()), "computed values name their source"
