"""``bench readback``'s peer arms (SGLang's own ``AsyncD2HCopyWorker``): skipped with the reason where
SGLang 0.5.23+ is missing, and wired to the real class on the simulated device in the upstream-0.5.23
session (stand-in for the GPU: the emulator's simulated device, whose waits never spin, so this checks
the wiring and the read-back values, not the spin).
"""

from __future__ import annotations

import importlib.metadata

import pytest

from cc_runtime.bench import readback_peer
from cc_runtime.bench.common import BenchContext


def _ctx(**extra) -> BenchContext:
    return BenchContext(quick=True, device="cpu", extra={"batch_sizes": "1", "steps": 8, "reps": 1, **extra})


def test_without_sglang_the_peer_arms_are_skipped_with_the_reason(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    peer = readback_peer.PeerArms(_ctx())
    assert peer.arms == ()
    notes: list[str] = []
    summary: dict = {}
    peer.report({}, [1], [{}], summary, notes)
    assert summary == {}
    assert notes == ["peer arms (sglang_worker, sglang_worker_blocking) skipped: sglang is not installed "
                     "(the peer arms need SGLang 0.5.23 or later)"]


def test_an_sglang_older_than_0_5_23_has_no_worker_to_compare(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.5.12")
    mod, why = readback_peer.upstream_worker()
    assert mod is None and why == "sglang 0.5.12 has no AsyncD2HCopyWorker (added in 0.5.23)"


@pytest.mark.upstream
@pytest.mark.timeout(600)
def test_peer_arms_run_sglangs_real_worker_beside_ours(sglang_version):
    if sglang_version != "0.5.23":
        pytest.skip("SGLang 0.5.23's AsyncD2HCopyWorker")
    from cc_runtime.bench import readback

    result = readback.run(_ctx())
    s = result.summary
    for arm in readback_peer.PEER_ARMS:
        assert s[f"{arm}_cpu_us_per_step"]["n"] == 1 and s[f"{arm}_cpu_us_per_step"]["median"] > 0
        assert f"{arm}_ratio_vs_cc_off" in s
        assert result.rows[0][f"{arm}_steps_s"] > 0
    assert s["readback_errors"] == 0  # every token id the peer workers read back belongs to its step
    assert any(n.startswith("peer arms: SGLang 0.5.23") for n in result.notes)
    from sglang.srt.managers import async_d2h_copy_worker as mod

    assert not hasattr(mod.AsyncD2HCopyWorker.__dict__["__init__"], "__wrapped__")  # the patch was reverted
