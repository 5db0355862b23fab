"""``cc-runtime bench prefill`` on the CPU (simulated) path: runs, labels itself, reports the keys."""

from __future__ import annotations

import pytest

from cc_runtime.bench.common import BenchContext
from cc_runtime.bench.prefill import run


@pytest.mark.timeout(120)
def test_quick_bench_on_cpu_reports_summary():
    result = run(BenchContext(quick=True, device="cpu", extra={"max_tokens": 128, "layers": 2}))
    s = result.summary
    for key in ("max_abs_diff_vs_eager", "speedup_vs_eager_128", "ratio_vs_cc_off_128"):
        assert isinstance(s[key], float), key
    assert s["max_abs_diff_vs_eager"] < 1e-4
    assert s["launches_piecewise_128"] < s["launches_eager_128"]
    assert s["ratio_vs_cc_off_128"] >= 1.0  # CC only ever adds cost in the model
    assert result.environment["latency_kind"] == "simulated"
    assert "SIMULATED" in " ".join(result.notes) and "simulated" in result.title
    assert [r["tokens"] for r in result.rows] == ["16", "100", "128", "mixed 128"]
