"""``cc-runtime bench prefill`` on the CPU path: what it times, what it models, how it labels itself."""

from __future__ import annotations

import time

import pytest

from cc_runtime.bench.common import BenchContext
from cc_runtime.bench.prefill import paired_samples, run

CTX = BenchContext(quick=True, device="cpu", extra={"max_tokens": 128, "layers": 2, "iters": 6})


@pytest.mark.timeout(120)
def test_quick_bench_on_cpu_reports_measured_summary_and_modelled_cc():
    result = run(CTX)
    s, m = result.summary, result.model
    assert s["max_abs_diff_vs_eager"] < 1e-4
    for key in ("eager_us_128", "piecewise_us_128", "piecewise_vs_eager_128"):
        assert s[key]["n"] >= 3 and s[key]["min"] <= s[key]["median"] <= s[key]["max"], key
    # Nothing derived from launch counts or the profile is in the summary on CPU: it is all model.
    assert not any(k.startswith(("launches", "speedup", "ratio_vs_cc_off")) for k in s), sorted(s)
    assert m["speedup_vs_eager_128"]["source"].startswith("measured CC-off time + launches x")
    assert m["launches_piecewise_128"]["value"] < m["launches_eager_128"]["value"]
    assert result.environment["latency_kind"] == "simulated"
    assert "SIMULATED" in " ".join(result.notes) and "simulated" in result.title
    assert [r["tokens"] for r in result.rows] == ["16", "100", "128", "mixed 128"]


@pytest.mark.timeout(120)
def test_the_piecewise_arm_times_the_runner_itself(monkeypatch):
    """A runner made 50 ms slower must show up slower by about that: the runner is timed, not eager at
    its size (50 ms: well above what a loaded machine's noise adds to a tiny model's forward)."""
    from cc_runtime.graphs import PiecewiseCudaGraphRunner

    real_call = PiecewiseCudaGraphRunner.__call__

    def slow_call(self, *inputs):
        time.sleep(0.05)
        return real_call(self, *inputs)

    monkeypatch.setattr(PiecewiseCudaGraphRunner, "__call__", slow_call)
    result = run(CTX)
    for row in result.rows:
        assert row["piecewise_off_us"] - row["eager_off_us"] > 30_000, row
    assert result.summary["piecewise_us_128"]["min"] > result.summary["eager_us_128"]["median"] + 25_000


def test_paired_samples_alternate_the_functions():
    order: list[str] = []
    out = paired_samples([lambda: order.append("a"), lambda: order.append("b")], lambda: None, n=3, warmup=1)
    assert order == ["a", "b"] + ["a", "b"] * 3
    assert [len(x) for x in out] == [3, 3]
