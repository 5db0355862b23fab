"""Tests for flashinfer.utils.is_confidential_compute.

They run without a GPU: NVML's confidential-computing queries are replaced by
fakes (the real pynvml structures, filled in by monkeypatched functions), and
torch.cuda.is_available() is forced to True so that the NVML path is taken.
"""

import pynvml
import pytest
import torch

import flashinfer.utils as fi_utils


def _fake_nvml(monkeypatch, cc_feature, multi_gpu_mode):
    def get_settings(ref):
        ref._obj.ccFeature = cc_feature
        ref._obj.multiGpuMode = multi_gpu_mode
        return pynvml.NVML_SUCCESS

    class State:
        ccFeature = cc_feature

    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlSystemGetConfComputeSettings", get_settings)
    monkeypatch.setattr(pynvml, "nvmlSystemGetConfComputeState", lambda: State())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture(autouse=True)
def _fresh_detection(monkeypatch):
    monkeypatch.delenv("FLASHINFER_CONFIDENTIAL_COMPUTE", raising=False)
    clear = getattr(fi_utils.is_confidential_compute, "cache_clear", None)
    if clear is not None:
        clear()
    if hasattr(fi_utils, "_nvml_cc_state"):
        monkeypatch.setattr(fi_utils, "_nvml_cc_state", None)
    yield
    if clear is not None:
        clear()


def test_cc_feature_is_confidential_compute(monkeypatch):
    _fake_nvml(monkeypatch, 1, pynvml.NVML_CC_SYSTEM_MULTIGPU_NONE)
    assert fi_utils.is_confidential_compute()


def test_protected_pcie_is_confidential_compute(monkeypatch):
    # Multi-GPU protected PCIe mode is CC, with ccFeature left disabled.
    _fake_nvml(monkeypatch, 0, pynvml.NVML_CC_SYSTEM_MULTIGPU_PROTECTED_PCIE)
    assert fi_utils.is_confidential_compute()


def test_override_is_read_on_every_call(monkeypatch):
    _fake_nvml(monkeypatch, 0, pynvml.NVML_CC_SYSTEM_MULTIGPU_PROTECTED_PCIE)
    monkeypatch.setenv("FLASHINFER_CONFIDENTIAL_COMPUTE", "0")
    assert not fi_utils.is_confidential_compute()
    # The first answer must not stick: without the override, NVML decides.
    monkeypatch.delenv("FLASHINFER_CONFIDENTIAL_COMPUTE")
    assert fi_utils.is_confidential_compute()
    monkeypatch.setenv("FLASHINFER_CONFIDENTIAL_COMPUTE", "0")
    assert not fi_utils.is_confidential_compute()


def test_invalid_override_raises(monkeypatch):
    monkeypatch.setenv("FLASHINFER_CONFIDENTIAL_COMPUTE", "yes")
    with pytest.raises(ValueError, match="FLASHINFER_CONFIDENTIAL_COMPUTE"):
        fi_utils.is_confidential_compute()
