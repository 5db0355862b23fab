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


def test_step_bench_runs_torch_single_threaded_on_the_simulated_device_and_restores_it(monkeypatch):
    """A parallel pack competing with the simulated device's threads costs ms on a small machine (an
    artefact no GPU host has): the simulated runs use one intra-op thread, and the caller's setting
    comes back afterwards."""
    import torch

    from cc_runtime.bench import step

    seen: list[int] = []
    real = step._run_loop

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(step, "_run_loop", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        step.run(BenchContext(quick=True, device="cpu", emulate="h100",
                              extra={"batch_sizes": "1", "prefill_tokens": "128", "steps": 2, "reps": 1}))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
