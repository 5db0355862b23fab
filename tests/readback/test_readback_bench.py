"""``cc-runtime bench readback``: result format and correctness (never its timings: those are the
benchmark's job, not a unit test's)."""

from __future__ import annotations

import pytest

from cc_runtime.bench.common import BenchContext


def _ctx(device: str, **extra: object) -> BenchContext:
    return BenchContext(quick=True, device=device, emulate="h100", extra=dict(extra))


@pytest.mark.timeout(120)
def test_simulated_run_reports_the_contracted_summary():
    from cc_runtime.bench import readback

    result = readback.run(_ctx("cpu", batch_sizes="1,64", steps=20, step_ms=1.0))
    s = result.summary
    for key in ("ratio_vs_cc_off", "uncorrected_ratio_vs_cc_off", "transfers_per_step"):
        assert isinstance(s[key], float) and s[key] > 0
    assert s["readback_errors"] == 0
    assert s["transfers_per_step"] == 1.0, "one crossing per step with cc_runtime"
    assert s["inline_transfers_per_step"] == 4.0, "upstream reads the four outputs one by one"
    assert [r["batch"] for r in result.rows] == [1, 64]
    assert set(readback.COLUMNS) <= set(result.rows[0])
    assert "simulated" in result.title


@pytest.mark.timeout(120)
def test_soak_checks_every_step():
    from cc_runtime.bench import readback

    result = readback.run(_ctx("cpu", batch_sizes="8", steps=5, step_ms=0.5, soak_steps=500))
    s = result.summary
    assert s["soak_steps"] == 500 and s["soak_completed"] == 500 and s["soak_errors"] == 0


@pytest.mark.gpu
@pytest.mark.timeout(300)
def test_gpu_emulated_run():
    """Real kernels, CC from the emulator's torch hooks: correct results and one crossing per step."""
    from cc_runtime.bench import readback

    result = readback.run(_ctx("cuda", batch_sizes="1,256", steps=40))
    assert result.summary["readback_errors"] == 0
    assert result.summary["transfers_per_step"] == 1.0


@pytest.mark.timeout(120)
def test_real_cc_machine_has_no_cc_off_arm(monkeypatch):
    """On a GPU in real CC mode there is no CC-off baseline: report the speed-up over inline instead."""
    from cc_runtime.bench import readback

    monkeypatch.setattr(readback, "_real_cc", lambda ctx: True)
    result = readback.run(_ctx("cpu", batch_sizes="4", steps=10, step_ms=0.5))
    assert result.summary["ratio_vs_cc_off"] is None and result.summary["uncorrected_ratio_vs_cc_off"] is None
    assert result.summary["speedup_vs_inline"] > 0
    assert result.rows[0]["cc_off_steps_s"] is None
    assert result.title.endswith("cc_runtime") and "real CC" in result.title
