"""FlashInfer timer and detection patches against the REAL FlashInfer code: 0.7.2.post1 (nox
``upstream-0.5.23``) and 0.6.11.post1 (nox ``upstream-0.5.12``). Each test skips unless its version is
the installed one.

Stand-ins (nothing of FlashInfer is stubbed), and why:
- the CC-safe timer is pinned to a ``FakeTimer`` (its clock stands in for %globaltimer) because there
  is no GPU; ``StampingFakeTimer.stamp_tensor`` stands in for the stamp kernel FlashInfer calls;
- for running 0.6.11's ``_profile_single_kernel`` body on CPU: ``torch.cuda.current_stream`` /
  ``torch.cuda.stream`` (CPU torch has no streams) and FlashInfer's ``delay_kernel`` (a CUDA kernel);
  runners are functions that advance the fake clock;
- for the detection gap: ``pynvml`` (no NVML without a driver) and ``torch.cuda.is_available``.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
import types

import pytest

import cc_runtime
from cc_runtime import detect, runtime
from cc_runtime.detect import CCState
from cc_runtime.patching import installed_version
from cc_runtime.timer import FakeClock, FakeTimer, StampEvent, use_timer

pytestmark = pytest.mark.upstream


def _need(version: str):
    got = installed_version("flashinfer-python")
    if got != version:
        pytest.skip(f"needs flashinfer-python {version} (installed: {got})")
    return pytest.importorskip("flashinfer.autotuner")


class StampingFakeTimer(FakeTimer):
    """FakeTimer plus FlashInfer's stamp-kernel contract (fn(int64 tensor) writes the timer into [0])."""

    def stamp_tensor(self, out, stream=None):
        out[0] = self.clock.now_ns


@pytest.fixture
def fresh():
    runtime._reset_for_tests()
    yield
    runtime._reset_for_tests()


def _fi_module():
    from flashinfer.autotuner import AutoTuner

    return sys.modules[AutoTuner.__module__]


# -- 0.7.2.post1 --------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_072_patches_install_and_revert_exactly(fresh):
    _need("0.7.2.post1")
    import flashinfer.utils as futils

    fi = _fi_module()
    before = {
        "utils.get_globaltimer_kernel": futils.get_globaltimer_kernel,
        "utils.is_confidential_compute": futils.is_confidential_compute,
        "autotuner.get_globaltimer_kernel": fi.get_globaltimer_kernel,
        "autotuner.is_confidential_compute": fi.is_confidential_compute,
        "autotuner.torch": fi.torch,
    }
    cc_runtime.activate(cc="1")
    mgr = runtime.manager()
    for name in ("flashinfer.globaltimer_kernel", "flashinfer.cold_l2_timer", "flashinfer.cc_detect"):
        assert mgr.records[name].status == "applied", (name, mgr.records[name].reason)
    assert mgr.records["flashinfer.autotuner_timer_legacy"].status == "not applicable"  # < 0.6.16; siblings cover it
    after = {
        "utils.get_globaltimer_kernel": futils.get_globaltimer_kernel,
        "utils.is_confidential_compute": futils.is_confidential_compute,
        "autotuner.get_globaltimer_kernel": fi.get_globaltimer_kernel,
        "autotuner.is_confidential_compute": fi.is_confidential_compute,
        "autotuner.torch": fi.torch,
    }
    assert all(after[k] is not before[k] for k in before), after
    # stale `from flashinfer.utils import X` copies were rebound too
    assert fi.get_globaltimer_kernel is futils.get_globaltimer_kernel
    runtime.deactivate()
    now = {
        "utils.get_globaltimer_kernel": futils.get_globaltimer_kernel,
        "utils.is_confidential_compute": futils.is_confidential_compute,
        "autotuner.get_globaltimer_kernel": fi.get_globaltimer_kernel,
        "autotuner.is_confidential_compute": fi.is_confidential_compute,
        "autotuner.torch": fi.torch,
    }
    assert all(now[k] is before[k] for k in before)


@pytest.mark.timeout(300)
def test_072_existing_autotuner_is_switched_to_globaltimer(fresh, monkeypatch):
    _need("0.7.2.post1")
    import torch
    from flashinfer.autotuner import AutoTuner

    monkeypatch.delenv("FLASHINFER_AUTOTUNE_TIMER", raising=False)
    monkeypatch.delenv("FLASHINFER_CONFIDENTIAL_COMPUTE", raising=False)
    saved = AutoTuner._instance
    try:
        AutoTuner._instance = None
        tuner = AutoTuner.get()  # built before cc_runtime: CC not detected on CPU -> CUDA events
        assert tuner._use_global_timer is False
        timer = StampingFakeTimer(FakeClock())
        with use_timer(timer):
            cc_runtime.activate(cc="1")
            assert tuner._use_global_timer is True
            ts = torch.zeros(1, dtype=torch.int64)
            tuner._record_global_timer(ts)  # FlashInfer's own call shape
            assert int(ts[0]) == timer.clock.now_ns
            # An AutoTuner built now reads the exported env and gets the nvcc-free kernel through the
            # rebound get_globaltimer_kernel.
            later = AutoTuner()
            assert later._use_global_timer is True
            assert later._record_global_timer == timer.stamp_tensor
        runtime.deactivate()
        assert tuner._use_global_timer is False and tuner._record_global_timer is None
    finally:
        AutoTuner._instance = saved


@pytest.mark.timeout(300)
def test_072_user_choice_of_cuda_events_is_kept(fresh, monkeypatch):
    """FLASHINFER_AUTOTUNE_TIMER=cuda_event set by the user: no globaltimer switch behind FlashInfer's back."""
    _need("0.7.2.post1")
    from flashinfer.autotuner import AutoTuner

    monkeypatch.setenv("FLASHINFER_AUTOTUNE_TIMER", "cuda_event")
    saved = AutoTuner._instance
    try:
        AutoTuner._instance = None
        tuner = AutoTuner.get()
        with use_timer(StampingFakeTimer(FakeClock())):
            cc_runtime.activate(cc="1")
            for name in ("flashinfer.globaltimer_kernel", "flashinfer.cold_l2_timer"):
                assert runtime.manager().records[name].status == "not applicable", name  # the patch does not want this state
            assert tuner._use_global_timer is False and tuner._record_global_timer is None
            assert _fi_module().torch is __import__("torch")
    finally:
        AutoTuner._instance = saved


@pytest.mark.timeout(300)
def test_072_cold_l2_events_become_globaltimer_stamps(fresh):
    _need("0.7.2.post1")
    import torch
    from flashinfer.autotuner import AutoTuner

    fi = _fi_module()
    src = inspect.getsource(AutoTuner._profile_single_kernel)
    cold = src[src.index("def cold_l2_profile"):src.index("def pure_profile")]
    assert "torch.cuda.Event(enable_timing=True)" in cold  # the seam the patch relies on
    cc_runtime.activate(cc="1")
    clock = FakeClock()
    with use_timer(FakeTimer(clock)):
        ev_start = fi.torch.cuda.Event(enable_timing=True)
        ev_end = fi.torch.cuda.Event(enable_timing=True)
        assert isinstance(ev_start, StampEvent)
        ev_start.record(object())  # cold_l2_profile passes its stream
        clock.advance(70_000)
        ev_end.record(object())
        assert ev_start.elapsed_time(ev_end) == pytest.approx(0.070, abs=1e-4)
    assert isinstance(fi.torch.cuda.Event(), torch.cuda.Event)  # sync-only events stay real
    assert fi.torch.float16 is torch.float16 and fi.torch.Tensor is torch.Tensor
    runtime.deactivate()
    assert fi.torch is torch


@pytest.mark.timeout(300)
def test_072_detection_gap_protected_pcie(fresh, monkeypatch):
    """FlashInfer's own check reads ccFeature only: a protected-PCIe machine (ccFeature 0) is missed."""
    _need("0.7.2.post1")
    import flashinfer.utils as futils
    import torch

    fake_nvml = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlSystemGetConfComputeState=lambda: types.SimpleNamespace(ccFeature=0, environment=2, devToolsMode=0))
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("FLASHINFER_CONFIDENTIAL_COMPUTE", raising=False)
    original = futils.is_confidential_compute
    original.cache_clear()
    assert original() is False  # upstream misses it
    original.cache_clear()
    cc_runtime.activate(cc="1")
    monkeypatch.delenv("FLASHINFER_CONFIDENTIAL_COMPUTE", raising=False)  # exported by flashinfer.cc_env
    detect.set_state(CCState(True, "nvml", "multiGpuMode protected PCIe", mode="protected-pcie", real=True,
                             multi_gpu_mode="protected-pcie"))
    assert futils.is_confidential_compute() is True
    monkeypatch.setenv("FLASHINFER_CONFIDENTIAL_COMPUTE", "0")
    assert futils.is_confidential_compute() is False  # FlashInfer's override keeps working
    monkeypatch.setenv("FLASHINFER_CONFIDENTIAL_COMPUTE", "yes")
    with pytest.raises(ValueError):
        futils.is_confidential_compute()
    runtime.deactivate()
    assert futils.is_confidential_compute is original


# -- 0.6.11.post1 -------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_0611_profile_single_kernel_installs_and_reverts(fresh):
    _need("0.6.11.post1")
    from flashinfer.autotuner import AutoTuner

    raw = AutoTuner.__dict__["_profile_single_kernel"]
    cc_runtime.activate(cc="1")
    rec = runtime.manager().records["flashinfer.autotuner_timer_legacy"]
    assert rec.status == "applied", rec.reason
    assert AutoTuner.__dict__["_profile_single_kernel"] is not raw
    for name in ("flashinfer.globaltimer_kernel", "flashinfer.cold_l2_timer", "flashinfer.cc_detect"):
        assert runtime.manager().records[name].status == "not applicable"  # >= 0.6.16 only; legacy covers it
    runtime.deactivate()
    assert AutoTuner.__dict__["_profile_single_kernel"] is raw


def _cpu_streams(monkeypatch, fi):
    import torch

    stream = types.SimpleNamespace(synchronize=lambda: None)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    delays: list[int] = []
    monkeypatch.setattr(fi, "delay_kernel", lambda us: delays.append(us))
    return delays


@pytest.mark.timeout(300)
def test_0611_tactics_are_timed_by_the_cc_timer_and_ranked_right(fresh, monkeypatch):
    _need("0.6.11.post1")
    import torch
    from flashinfer.autotuner import AutoTuner, TuningConfig

    fi = _fi_module()
    delays = _cpu_streams(monkeypatch, fi)
    cc_runtime.activate(cc="1")
    tuner = AutoTuner(warmup=2, repeat=10)
    clock = FakeClock()
    per_tactic_ms = {0: 0.30, 1: 0.20, 2: 0.25}

    def runner(inputs, tactic, **kwargs):
        clock.advance(per_tactic_ms[tactic] * 1e6)

    cfg = TuningConfig()
    with use_timer(FakeTimer(clock, stamp_cost_ns=1500)):
        got = {t: tuner._profile_single_kernel(runner, [torch.zeros(8)], t, cfg) for t in per_tactic_ms}
    assert got == {t: pytest.approx(ms, abs=1e-5) for t, ms in per_tactic_ms.items()}
    assert min(got, key=got.get) == 1
    assert delays == [tuner.stream_delay_micro_secs] * 3
    # Under CC an event pair can read negative: the tactic is disqualified, not crowned.
    with use_timer(FakeTimer(clock, corrupt=lambda ms: -abs(ms))):
        assert tuner._profile_single_kernel(runner, [torch.zeros(8)], 0, cfg) == math.inf
