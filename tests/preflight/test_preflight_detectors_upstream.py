"""Detector agreement against the real SGLang (0.5.12 / 0.5.23) and FlashInfer (0.6.11 / 0.7.2) code of
the upstream-* nox sessions, under forced and emulated CC, and a real disagreement: protected PCIe,
which FlashInfer 0.7.2's own detector misses.

Stand-ins, each for what cannot exist here: the fake NVML (no driver on a CPU machine) and, for the
protected-PCIe case, ``torch.cuda.is_available`` / SGLang's ``is_cuda`` answering True (both upstream
detectors return False on a machine without CUDA before they ever ask NVML)."""

from __future__ import annotations

import os
import sys

import preflight_fake_nvml as fake_nvml
import pytest

import cc_runtime
from cc_runtime import detect, preflight
from cc_runtime.preflight import detectors

pytestmark = pytest.mark.upstream


@pytest.fixture
def fresh(sglang_version, monkeypatch):
    """Upstream detectors cache their first answer (lru_cache): start and end each test uncached."""
    mods = []
    for _, _, module, func in detectors.DETECTORS:
        try:
            mod = __import__(module, fromlist=[func])
        except Exception:  # noqa: BLE001
            continue
        fn = getattr(mod, func, None)
        if fn is not None:
            mods.append(fn)
            fn.cache_clear()
    for var in ("SGLANG_FORCE_CONFIDENTIAL_COMPUTE", "FLASHINFER_CONFIDENTIAL_COMPUTE"):
        monkeypatch.delenv(var, raising=False)
    yield sglang_version
    for fn in mods:
        fn.cache_clear()


def detector_versions(version: str) -> tuple[bool, bool]:
    """(SGLang has a detector, FlashInfer has one) for this session's pins."""
    return (version == "0.5.23", version == "0.5.23")  # FlashInfer 0.7.2 with 0.5.23, 0.6.11 with 0.5.12


@pytest.mark.parametrize("how", [{"cc": "1"}, {"emulate": "h100"}])
def test_forced_or_emulated_cc_the_detectors_agree_through_cc_runtimes_exports(fresh, how) -> None:
    state = cc_runtime.activate(**how)
    import sglang.srt.utils.common  # noqa: F401 - importing applies the waiting sglang.cc_env patch

    check = detectors.check(state, import_modules=True)
    has_sglang, has_flashinfer = detector_versions(fresh)
    if has_sglang or has_flashinfer:
        assert check.result == "pass", check
        assert check.evidence["sglang"].get("answer") is True and check.evidence["flashinfer"]["answer"] is True
    else:
        assert check.result == "not applicable" and "no CC detector" in check.reason, check


def test_a_users_override_that_disagrees_fails(fresh, monkeypatch) -> None:
    if fresh != "0.5.23":
        pytest.skip("SGLang 0.5.12 / FlashInfer 0.6.11 have no CC detector to disagree")
    monkeypatch.setenv("FLASHINFER_CONFIDENTIAL_COMPUTE", "0")  # never overwritten by cc_runtime
    state = cc_runtime.activate(cc="1")
    check = detectors.check(state, import_modules=True)
    assert check.result == "fail" and "FLASHINFER_CONFIDENTIAL_COMPUTE=1" in check.reason
    assert check.evidence["sglang"]["answer"] is True and check.evidence["flashinfer"]["answer"] is False


def test_protected_pcie_flashinfer_misses_it_sglang_and_cc_runtime_see_it(fresh, monkeypatch) -> None:
    if fresh != "0.5.23":
        pytest.skip("needs SGLang 0.5.23 / FlashInfer 0.7.2 detectors")
    import torch
    from sglang.srt.utils import common

    nv = fake_nvml.make(cc_feature=0, multi_gpu=1)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(common, "is_cuda", lambda: True)
    state = detect.probe_nvml(nv)
    assert state.enabled and state.mode == "protected-pcie"  # cc_runtime's own reading
    check = detectors.check(state, import_modules=True)
    assert check.evidence["sglang"]["answer"] is True
    assert check.evidence["flashinfer"]["answer"] is False
    assert check.result == "fail" and "flashinfer" in check.reason
    assert os.environ.get("FLASHINFER_CONFIDENTIAL_COMPUTE") is None


def test_the_preflight_report_carries_the_detector_check(fresh) -> None:
    state = cc_runtime.activate(cc="1")
    report = preflight.run(state=state, mode="warn", where="test", pynvml=fake_nvml.make(cc_feature=0))
    names = [c.name for c in report.checks]
    assert names == ["cc_mode", "devtools", "gpus_ready", "driver", "detectors", "attestation"]
    assert report.checks[0].result == "fail"  # forced CC on a machine NVML calls non-CC
