"""The torch-level CC emulation hooks, exercised on CPU.

Stand-ins, because this machine has no GPU: tensors on torch's ``meta`` device play CUDA tensors and
a SimDevice stream plays the current CUDA stream (``StandInBackend``). Meta tensors hold no data, so
device->host reads use a recording stand-in for the original torch method. ``torch.cuda.Event``,
``CUDAGraph`` and ``cudart`` cannot be created without CUDA: a namespace holding stand-in classes is
passed as ``torch_module`` for those. Everything else (torch.Tensor methods, the dispatch mode,
threading) is the real thing. Real-GPU versions of these checks are in test_emulator_gpu.py.
"""

from __future__ import annotations

import threading
import types

import pytest
import torch

from cc_runtime import detect
from cc_runtime.detect import CCState
from cc_runtime.emulator import SimDevice, load_profile
from cc_runtime.emulator import cuda as ec
from cc_runtime.patching import Patch, PatchContext

TENSOR_ATTRS = ("to", "copy_", "cpu", "tolist", "item", "cuda")


@pytest.fixture(autouse=True)
def _clean_state():
    detect.reset()
    yield
    ec.disable()
    detect.reset()


def _blocker(sim: SimDevice, stream, log: list[str]) -> threading.Event:
    """Queue a long op that finishes only when released (by a timer), appending to ``log``."""
    release = threading.Event()
    sim.launch(lambda: (release.wait(5), log.append("queued op finished")), 0.0, stream)
    threading.Timer(0.05, release.set).start()
    return release


@pytest.mark.timeout(10)
@pytest.mark.parametrize("how", ["to_non_blocking", "to", "copy_non_blocking"])
def test_h2d_copy_returns_only_after_earlier_stream_work(sim, how: str) -> None:
    s = sim.Stream()
    log: list[str] = []
    with ec.emulate("h100", backend=ec.StandInBackend(s)) as em:
        _blocker(sim, s, log)
        host = torch.ones(256)
        if how == "to_non_blocking":
            host.to("meta", non_blocking=True)
        elif how == "to":
            host.to(torch.device("meta"))
        else:
            torch.empty(256, device="meta").copy_(host, non_blocking=True)
        log.append("copy returned")
        assert log == ["queued op finished", "copy returned"]
        assert em.stats["h2d"] == 1 and em.stats["bytes_h2d"] == 1024
        assert em.stats["launches"] == 0  # the copy is charged as a copy, not also as a launch


@pytest.mark.timeout(10)
@pytest.mark.parametrize("method", ["cpu", "tolist", "item"])
def test_d2h_read_syncs_stream_then_copies_then_charges(sim, method: str) -> None:
    s = sim.Stream()
    log: list[str] = []
    em = ec.Emulator("h100", ec.StandInBackend(s))
    em.active = True

    def original(self, *args, **kwargs):  # meta tensors hold no data: record instead of reading
        log.append("copy")
        return "value"

    hook = ec._hook_d2h(em, original, whole=method != "item")
    _blocker(sim, s, log)
    assert hook(torch.empty(8, device="meta")) == "value"
    assert log == ["queued op finished", "copy"]
    assert em.stats["bytes_d2h"] == (4 if method == "item" else 32)
    assert hook(torch.ones(2)) == "value" and em.stats["d2h"] == 1  # host tensors are not charged


@pytest.mark.timeout(10)
def test_launch_costs_charged_per_kernel_in_every_thread_started_after(sim) -> None:
    with ec.emulate("h100", backend=ec.StandInBackend(sim.Stream())) as em:
        x = torch.empty(4, 4, device="meta")
        before = em.stats["launches"]
        y = x + 1  # one kernel
        y.view(16)  # a view launches nothing
        torch.empty(3, device="meta")  # an allocation launches nothing
        torch.ones(3) * 2  # host tensors launch nothing on the device
        assert em.stats["launches"] - before == 1

        def worker() -> None:
            torch.mm(x, x).relu_()

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert em.stats["launches"] - before == 3


@pytest.mark.timeout(10)
@pytest.mark.parametrize("factory", ["tensor", "as_tensor"])
def test_factories_with_host_data_are_h2d_copies(sim, factory: str) -> None:
    s = sim.Stream()
    log: list[str] = []
    with ec.emulate("h100", backend=ec.StandInBackend(s)) as em:
        _blocker(sim, s, log)
        getattr(torch, factory)([1.0, 2.0], device="meta")  # the H2D copy happens inside C++
        log.append("returned")
        assert log == ["queued op finished", "returned"]
        assert em.stats["h2d"] == 1 and em.stats["bytes_h2d"] == 8
        torch.tensor([1.0])  # host-only: not a copy
        assert em.stats["h2d"] == 1


@pytest.mark.timeout(10)
def test_cross_device_copies_seen_only_by_the_dispatcher_are_charged(sim) -> None:
    s = sim.Stream()
    log: list[str] = []
    with ec.emulate("h100", backend=ec.StandInBackend(s)) as em:
        _blocker(sim, s, log)
        torch.ops.aten._to_copy.default(torch.ones(3), device=torch.device("meta"))
        log.append("returned")
        assert log == ["queued op finished", "returned"]
        assert em.stats["h2d"] == 1 and em.stats["launches"] == 0


def test_copies_pass_through_during_graph_capture(sim) -> None:
    class Capturing(ec.StandInBackend):
        def is_capturing(self) -> bool:
            return True

    with ec.emulate("h100", backend=Capturing(sim.Stream())) as em:
        torch.ones(4).to("meta")
        (torch.empty(2, device="meta") + 1)
        assert em.stats["h2d"] == 0 and em.stats["launches"] == 0


def _fake_torch_cuda(calls: list[str]) -> types.SimpleNamespace:
    class Event:
        def elapsed_time(self, end) -> float:
            return 1.0

    class CUDAGraph:
        def replay(self) -> None:
            calls.append("replay")

    class Cudart:
        class cudaError(int):  # noqa: N801 - mirrors torch's pybind enum
            pass

        def cudaHostRegister(self, ptr, size, flags):  # noqa: N802
            return self.cudaError(0)

        def cudaHostUnregister(self, ptr):  # noqa: N802
            return self.cudaError(0)

    real = Cudart()
    return types.SimpleNamespace(Tensor=torch.Tensor, tensor=torch.tensor, as_tensor=torch.as_tensor,
                                 cuda=types.SimpleNamespace(Event=Event, CUDAGraph=CUDAGraph, cudart=lambda: real))


def test_events_graph_replay_and_host_register_under_emulation(sim) -> None:
    calls: list[str] = []
    tm = _fake_torch_cuda(calls)
    ctx = PatchContext(Patch("t", "torch", "", "", "", apply=lambda c: None))
    em = ec.install(ctx, "h100", backend=ec.StandInBackend(sim.Stream()), seed=5, torch_module=tm)
    try:
        readings = [tm.cuda.Event().elapsed_time(tm.cuda.Event()) for _ in range(300)]
        assert any(r < 0 for r in readings) and readings.count(1.0) > 0
        tm.cuda.CUDAGraph().replay()
        assert calls == ["replay"] and em.stats["graph_replays"] == 1
        cudart = tm.cuda.cudart()
        assert cudart.cudaHostRegister(0, 4096, 0) == ec.CUDA_ERROR_NOT_SUPPORTED
        assert cudart.cudaHostUnregister(0) == 0  # everything else is the real cudart
    finally:
        ctx.revert()
    assert tm.cuda.cudart().cudaHostRegister(0, 4096, 0) == 0
    ctx2 = PatchContext(Patch("t", "torch", "", "", "", apply=lambda c: None))
    em2 = ec.install(ctx2, "h100", backend=ec.StandInBackend(sim.Stream()), seed=5, torch_module=tm)
    try:
        assert [tm.cuda.Event().elapsed_time(tm.cuda.Event()) for _ in range(300)] == readings
    finally:
        ctx2.revert()
    assert not em2.active


def _snapshot(tm) -> dict[str, object]:
    snap: dict[str, object] = {f"Tensor.{a}": getattr(tm.Tensor, a) for a in TENSOR_ATTRS}
    snap.update({f"torch.{a}": getattr(tm, a, None) for a in ("tensor", "as_tensor")})
    snap.update({f"Tensor.__dict__.{a}": tm.Tensor.__dict__.get(a, "<absent>") for a in TENSOR_ATTRS})
    snap["Event.elapsed_time"] = tm.cuda.Event.__dict__["elapsed_time"]
    snap["CUDAGraph.replay"] = tm.cuda.CUDAGraph.__dict__["replay"]
    snap["cudart"] = tm.cuda.cudart
    snap["Thread._bootstrap_inner"] = threading.Thread.__dict__["_bootstrap_inner"]
    snap["dispatch stack depth"] = torch._C._len_torch_dispatch_stack()
    return snap


@pytest.mark.parametrize("use_fake_cuda", [True, False], ids=["fake-cuda-classes", "real-torch-cuda"])
def test_revert_restores_every_patched_object(sim, use_fake_cuda: bool) -> None:
    tm = _fake_torch_cuda([]) if use_fake_cuda else torch
    before = _snapshot(tm)
    ctx = PatchContext(Patch("t", "torch", "", "", "", apply=lambda c: None))
    ec.install(ctx, "b300", backend=ec.StandInBackend(sim.Stream()), torch_module=tm)
    during = _snapshot(tm)
    changed = [k for k in before if before[k] is not during[k] and k != "dispatch stack depth"]
    assert len(changed) >= 10, changed
    assert ctx.revert() == []
    after = _snapshot(tm)
    for key, value in before.items():
        assert after[key] is value or after[key] == value, key


def test_emulate_sets_and_restores_the_cc_state(sim) -> None:
    assert detect.cc_state().label == "off"
    with ec.emulate("b300", backend=ec.StandInBackend(sim.Stream())) as em:
        assert detect.cc_state().label == "emulated:b300" and ec.active() is em
        with pytest.raises(ec.EmulationRefused, match="already active"):
            ec.enable("h100", backend=ec.StandInBackend(sim.Stream()))
    assert detect.cc_state().label == "off" and ec.active() is None and not em.active


def _fake_nvml_with_cc_on() -> types.SimpleNamespace:
    """NVML as an H100 in CC mode reports it (state call only: an older nvidia-ml-py)."""
    state = types.SimpleNamespace(ccFeature=1, devToolsMode=0, environment=2)
    return types.SimpleNamespace(nvmlInit=lambda: None, nvmlShutdown=lambda: None,
                                 nvmlSystemGetConfComputeState=lambda: state)


def test_refused_under_real_cc_fake_nvml(sim) -> None:
    before = torch.Tensor.to
    with pytest.raises(ec.EmulationRefused, match="real CC is on"):
        ec.enable("h100", backend=ec.StandInBackend(sim.Stream()), pynvml=_fake_nvml_with_cc_on())
    assert torch.Tensor.to is before and ec.active() is None
    # detection agrees: asking for emulation on real CC keeps the real state
    state = detect.resolve(emulate="h100", pynvml=_fake_nvml_with_cc_on())
    assert state.real and state.source == "nvml" and "refused" in state.reason


def test_refused_when_detect_state_is_real_cc(sim) -> None:
    detect.set_state(CCState(True, "nvml", "NVML settings: ccFeature enabled", mode="on", real=True))
    with pytest.raises(ec.EmulationRefused, match="ccFeature enabled"):
        with ec.emulate("h100", backend=ec.StandInBackend(sim.Stream())):
            pass  # pragma: no cover


def test_cc_off_profile_is_refused_and_no_cuda_build_is_explained() -> None:
    with pytest.raises(ec.EmulationRefused, match="CC off"):
        ec.enable("off", backend=ec.StandInBackend(None))
    if torch.version.cuda is None:
        with pytest.raises(ec.EmulationRefused, match="SimDevice"):
            ec.enable("h100")
    assert ec.active() is None


def test_charge_uses_the_profile_cost(monkeypatch) -> None:
    from cc_runtime.emulator import charge

    deadlines: list[float] = []
    extras: list[float] = []
    monkeypatch.setattr(charge.time, "perf_counter", lambda: 100.0)  # a frozen clock: deadlines are exact
    monkeypatch.setattr(charge, "charge_until", deadlines.append)
    monkeypatch.setattr(charge, "charge_s", extras.append)
    busy_stream = types.SimpleNamespace(query=lambda: False, synchronize=lambda: None)
    em = ec.Emulator(load_profile("h100"), ec.StandInBackend(busy_stream))
    em.active = True
    em.copy("h2d", 3_040_000, torch.device("meta"), lambda: None)
    em.copy("d2h", 2_700_000, torch.device("meta"), lambda: None, pinned=False)
    em.copy("d2d", 10, torch.device("meta"), lambda: None)
    assert deadlines == [pytest.approx(100.0 + 21.9e-6 + 1e-3), pytest.approx(100.0 + 46.9e-6 + 1e-3)]
    assert extras == [pytest.approx(5.2e-6)]
    assert em.stats["pageable_d2h"] == 1


@pytest.mark.timeout(10)
def test_thread_started_before_enable_pays_copies_but_not_launches(sim) -> None:
    """The documented limitation: dispatch modes are thread-local, copy hooks are global."""
    go, done = threading.Event(), threading.Event()

    def worker() -> None:
        go.wait(5)
        torch.ones(4).to("meta")
        torch.empty(4, device="meta") + 1
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    with ec.emulate("h100", backend=ec.StandInBackend(sim.Stream())) as em:
        go.set()
        assert done.wait(5)
        t.join()
        assert em.stats["h2d"] == 1 and em.stats["launches"] == 0


@pytest.mark.timeout(10)
def test_a_copy_a_torch_function_mode_answers_without_copying_is_not_charged(sim) -> None:
    """cc_runtime's coalescing readback defers small ``.to("cpu")`` calls through a TorchFunctionMode and
    crosses once later: only copies that reach the dispatcher may be charged, or emulated SGLang would
    pay one CC crossing per deferred tensor on top of the coalesced one."""
    from torch.overrides import TorchFunctionMode

    class Defer(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            # torch hands the mode the current ``Tensor.to`` (the emulator's hook), as it does for
            # cc_runtime.patches.sglang_readback's deferring mode.
            if func in (torch.Tensor.to, torch._C.TensorBase.to) and args[0].device.type == "meta":
                return torch.empty(args[0].shape)  # answered on the host: no crossing
            return func(*args, **kwargs)

    s = sim.Stream()
    log: list[str] = []
    with ec.emulate("h100", backend=ec.StandInBackend(s)) as em:
        with Defer():
            torch.empty(4, device="meta").to("cpu", non_blocking=True)
            assert em.stats["d2h"] == 0
            _blocker(sim, s, log)
            torch.ones(4).to("meta")  # a real crossing: charged (at dispatch), after earlier work
            log.append("returned")
        assert log == ["queued op finished", "returned"]
        assert em.stats["h2d"] == 1 and em.stats["bytes_h2d"] == 16
