"""The opt-in allreduce+RMSNorm fusion patch against the REAL SGLang code (0.5.12 or 0.5.23, per nox session).

Real: SGLang's ``FlashInferWorkspaceManager.initialize`` and its preflight / fallback logic, its backend
resolution (0.5.23), a real ``torch.distributed`` gloo group for the preflight's vote, and on 0.5.23 the
real FlashInfer 0.7.2.post1 ``create_allreduce_fusion_workspace`` -> ``TRTLLMAllReduceFusionWorkspace``.

Stand-ins, only for what cannot exist on a CPU-only machine (each says so where it is used):
* ``DriverStandIn``: cuda-python's driver bindings (``cuda.bindings.driver`` needs libcuda to import),
  answering as a GPU without CC would. CC's "multicast unavailable" comes from cc_runtime's emulator
  (``cc_runtime.emulator.bindings.install_refusals`` with the h100 profile), which hooks this stand-in
  exactly as it hooks the real bindings; the allocation calls stay a stand-in (they need a GPU).
* FlashInfer's workspace allocation (``trtllm_create_ipc_workspace_for_all_reduce_fusion`` allocates
  device memory and exchanges IPC handles): a recorder that returns the real function's result shape.
* The module globals SGLang's import block sets when FlashInfer is usable (``is_flashinfer_available()``
  is False without a GPU), and ``torch.cuda.current_device`` / FlashInfer's fabric query.
* 0.5.12: FlashInfer 0.6.11.post1's ``flashinfer.comm`` cannot be imported on CPU (it imports the GPU
  package ``cuda.tile``), so its ``comm`` module is a recorder too there; the FlashInfer side of the
  patch (workspace kind) is tested on 0.5.23 only.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from enum import Enum
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import cc_runtime  # noqa: E402
from cc_runtime import runtime  # noqa: E402

pytestmark = [pytest.mark.upstream, pytest.mark.timeout(300)]

NAME = "sglang.allreduce_fusion_ipc"


class CUresult(Enum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_OUT_OF_MEMORY = 2
    CUDA_ERROR_NOT_SUPPORTED = 801


class _Struct:
    def __init__(self) -> None:
        self.allocFlags = SimpleNamespace(gpuDirectRDMACapable=0)  # noqa: N815 - CUDA's name


class DriverStandIn:
    """Stand-in for ``cuda.bindings.driver`` (needs libcuda), as on a GPU without CC (multicast works)."""

    CUresult = CUresult
    CUmemAllocationProp = _Struct
    CUmemLocation = _Struct
    CUmulticastObjectProp = _Struct
    CUmemAllocationHandleType = SimpleNamespace(CU_MEM_HANDLE_TYPE_FABRIC="fabric",
                                                CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR="posix_fd")
    CUmemAllocationType = SimpleNamespace(CU_MEM_ALLOCATION_TYPE_PINNED="pinned")
    CUmemLocationType = SimpleNamespace(CU_MEM_LOCATION_TYPE_DEVICE="device")
    CUmemAllocationGranularity_flags = SimpleNamespace(CU_MEM_ALLOC_GRANULARITY_RECOMMENDED="recommended")
    CUmulticastGranularity_flags = SimpleNamespace(CU_MULTICAST_GRANULARITY_RECOMMENDED="recommended")

    def __init__(self, create_fails: bool = False) -> None:
        self.create_fails = create_fails
        self.calls: list[str] = []
        self.live = 0

    def cuMemGetAllocationGranularity(self, prop: Any, flags: Any) -> tuple[CUresult, int]:  # noqa: N802
        self.calls.append("cuMemGetAllocationGranularity")
        return CUresult.CUDA_SUCCESS, 2 << 20

    def cuMulticastGetGranularity(self, prop: Any, flags: Any) -> tuple[CUresult, int]:  # noqa: N802
        self.calls.append("cuMulticastGetGranularity")
        return CUresult.CUDA_SUCCESS, 2 << 20

    def cuMemCreate(self, size: int, prop: Any, flags: int) -> tuple[CUresult, Any]:  # noqa: N802
        self.calls.append(f"cuMemCreate:{prop.requestedHandleTypes}")
        if self.create_fails:
            return CUresult.CUDA_ERROR_OUT_OF_MEMORY, None
        self.live += 1
        return CUresult.CUDA_SUCCESS, object()

    def cuMemRelease(self, handle: Any) -> tuple[CUresult]:  # noqa: N802
        self.live -= 1
        return (CUresult.CUDA_SUCCESS,)


class WorkspaceRecorder:
    """Stand-in for FlashInfer's workspace allocation (device memory + IPC exchange): records the kind asked."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.fail is not None:
            raise self.fail
        metadata = {"tp_rank": kwargs["tp_rank"], "tp_size": kwargs["tp_size"],
                    "max_token_num": kwargs["max_token_num"], "hidden_dim": kwargs["hidden_dim"],
                    "use_fp32_lamport": kwargs.get("use_fp32_lamport", False)}
        ipc = [[0x1000 * (i + 1)] * kwargs["tp_size"] for i in range(3)]
        if kwargs.get("use_symm_dev_mem"):
            return ipc, torch.zeros(1), ["symm-handle"], metadata
        return ipc, torch.zeros(1), metadata


@pytest.fixture(scope="module")
def cpu_group() -> Any:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    return dist.new_group([0], backend="gloo")


@pytest.fixture
def fusion(sglang_version: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """SGLang's fusion module set up as on a GPU machine with FlashInfer (see the module docstring)."""
    runtime._reset_for_tests()
    from sglang.srt.layers import flashinfer_comm_fusion as f

    recorder = WorkspaceRecorder()
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # stand-in: no GPU
    if sglang_version == "0.5.12":
        # Stand-in for flashinfer.comm (not importable on CPU): create_allreduce_fusion_workspace records.
        def create_allreduce_fusion_workspace(**kw: Any) -> Any:
            recorder.calls.append(kw)
            return SimpleNamespace(backend=kw["backend"])

        comm = SimpleNamespace(create_allreduce_fusion_workspace=create_allreduce_fusion_workspace,
                               allreduce_fusion=None)
        monkeypatch.setattr(f, "_flashinfer_comm", comm)
        monkeypatch.setenv("SGLANG_FLASHINFER_FORCE_POSIX_FD_TRANSPORT", "1")  # skips FlashInfer's fabric query
    else:
        import flashinfer.comm as comm
        import flashinfer.comm.allreduce as fi_ar
        import flashinfer.comm.mnnvl as fi_mnnvl

        real = fi_ar.trtllm_create_ipc_workspace_for_all_reduce_fusion
        recorder.__signature__ = inspect.signature(real)  # type: ignore[attr-defined]
        monkeypatch.setattr(fi_ar, "trtllm_create_ipc_workspace_for_all_reduce_fusion", recorder)
        monkeypatch.setattr(fi_mnnvl, "is_mnnvl_fabric_supported", lambda device: False)  # NVML query
        monkeypatch.setattr(f, "_flashinfer_comm", comm)
        monkeypatch.setattr(f, "_create_allreduce_fusion_workspace", comm.create_allreduce_fusion_workspace)
        monkeypatch.setattr(f, "_flashinfer_create_workspace_supports_group", True)
        monkeypatch.setattr(f, "_flashinfer_create_workspace_supports_comm_backend", True)
    monkeypatch.setattr(f, "_flashinfer_allreduce_unavailable", False)
    try:
        yield SimpleNamespace(mod=f, recorder=recorder, version=sglang_version)
    finally:
        runtime._reset_for_tests()


def _use_driver(fusion: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, driver: DriverStandIn) -> None:
    """SGLang gets ``driver`` with CC's refusals installed by the emulator (multicast unavailable)."""
    from cc_runtime.emulator.bindings import install_refusals
    from cc_runtime.emulator.profiles import load_profile

    install_refusals(None, load_profile("h100"), driver=driver, discover=False)
    refused = driver.cuMulticastGetGranularity  # type: ignore[method-assign]

    def asked(*args: Any) -> Any:  # records that SGLang asked (the emulator answers without the stand-in)
        driver.calls.append("cuMulticastGetGranularity")
        return refused(*args)

    driver.cuMulticastGetGranularity = asked  # type: ignore[method-assign]
    monkeypatch.setattr(fusion.mod, "get_cuda_driver_bindings", lambda: driver)


def _initialize(fusion: SimpleNamespace, cpu_group: Any) -> Any:
    manager = fusion.mod.FlashInferWorkspaceManager()
    kw: dict[str, Any] = dict(world_size=2, rank=0, max_token_num=128, hidden_dim=256, dtype=torch.bfloat16,
                              device_group=None, cpu_group=cpu_group)
    if fusion.version != "0.5.12":
        kw["backend"] = "trtllm"
    manager.initialize(**kw)
    return manager


def _activate_opt_in() -> Any:
    cc_runtime.activate(cc="1", patches=NAME, propagate=False)
    rec = runtime.manager().records[NAME]
    assert rec.status == "applied", rec.reason
    return rec


def test_opt_in_only_when_named(fusion: SimpleNamespace) -> None:
    cc_runtime.activate(cc="1", propagate=False)
    rec = runtime.manager().records[NAME]
    assert rec.status == "disabled" and "opt-in" in rec.reason
    listed = {p["name"]: p for p in runtime.manager().as_list()}[NAME]
    assert listed["opt_in"] is True and "experimental: needs multi-GPU CC hardware" in listed["summary"]
    assert "31447" in listed["upstream"]


def test_without_the_patch_multicast_preflight_turns_fusion_off(
        fusion: SimpleNamespace, cpu_group: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = DriverStandIn()
    _use_driver(fusion, monkeypatch, driver)
    manager = _initialize(fusion, cpu_group)
    assert "cuMulticastGetGranularity" in driver.calls  # upstream's preflight asks for multicast ...
    assert not manager.initialized and fusion.mod._flashinfer_allreduce_unavailable  # ... and gives up
    assert fusion.recorder.calls == []


def test_patched_preflight_uses_the_ipc_workspace_and_fusion_initializes(
        fusion: SimpleNamespace, cpu_group: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from cc_runtime.patches import sglang_allreduce_fusion as patch_mod

    driver = DriverStandIn()
    _use_driver(fusion, monkeypatch, driver)
    _activate_opt_in()
    with caplog.at_level(logging.INFO, logger="cc_runtime"):
        manager = _initialize(fusion, cpu_group)
    assert "cuMulticastGetGranularity" not in driver.calls
    creates = [c for c in driver.calls if c.startswith("cuMemCreate")]
    assert creates == ["cuMemCreate:posix_fd"] * 3 and driver.live == 0  # probed, then released
    assert {"preflight": "cc_ipc", "local_ok": True, "proceed": True, "reason": None} in patch_mod.DECISIONS
    assert manager.initialized and not fusion.mod._flashinfer_allreduce_unavailable
    assert len(fusion.recorder.calls) == 1
    if fusion.version != "0.5.12":
        # The real FlashInfer workspace class asked for a workspace: the IPC kind reached the allocator.
        assert fusion.recorder.calls[0]["use_symm_dev_mem"] is False
        assert manager.backend == "trtllm" and manager.workspace.mem_handles == []
        assert any(d.get("workspace") == "ipc" for d in patch_mod.DECISIONS)
    assert any("multicast-free IPC" in r.getMessage() for r in caplog.records)


def test_fallback_to_unfused_when_the_ipc_probe_fails(
        fusion: SimpleNamespace, cpu_group: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    _use_driver(fusion, monkeypatch, DriverStandIn(create_fails=True))
    _activate_opt_in()
    with caplog.at_level(logging.WARNING, logger="cc_runtime"):
        manager = _initialize(fusion, cpu_group)
    assert not manager.initialized and fusion.mod._flashinfer_allreduce_unavailable
    assert fusion.recorder.calls == []  # all ranks skip together: no workspace creation entered
    msgs = [r.getMessage() for r in caplog.records]
    assert any("unfused" in m and "cuMemCreate" in m and "CUDA_ERROR_OUT_OF_MEMORY" in m for m in msgs)


def test_fallback_to_unfused_when_the_ipc_workspace_cannot_be_made(
        fusion: SimpleNamespace, cpu_group: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    if fusion.version == "0.5.12":
        pytest.skip("FlashInfer 0.6.11.post1's flashinfer.comm does not import on CPU (needs cuda.tile)")
    _use_driver(fusion, monkeypatch, DriverStandIn())
    fusion.recorder.fail = RuntimeError("cudaIpcGetMemHandle: operation not permitted")
    _activate_opt_in()
    with caplog.at_level(logging.WARNING):
        manager = _initialize(fusion, cpu_group)
    assert fusion.recorder.calls and fusion.recorder.calls[0]["use_symm_dev_mem"] is False
    assert not manager.initialized and manager.workspace is None
    assert fusion.mod._flashinfer_allreduce_unavailable  # SGLang runs the unfused path from now on
    msgs = [r.getMessage() for r in caplog.records]
    assert any("IPC workspace could not be made" in m and "operation not permitted" in m for m in msgs)


def test_mnnvl_is_steered_to_trtllm_single_node_only(fusion: SimpleNamespace) -> None:
    if fusion.version == "0.5.12":
        pytest.skip("0.5.12 always asks FlashInfer for trtllm")
    f = fusion.mod
    sm100 = SimpleNamespace(is_sm100=True, is_sm90=False)
    import unittest.mock as mock

    with mock.patch.object(f, "get_platform", lambda: sm100):
        assert f._resolve_backend("auto", False) == "mnnvl"  # upstream on Blackwell
        _activate_opt_in()
        assert f._resolve_backend("auto", False) == "trtllm"
        assert f._resolve_backend("mnnvl", True) == "mnnvl"  # multi-node: no multicast-free option
