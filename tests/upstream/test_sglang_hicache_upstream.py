"""HiCache host KV pools under (emulated) CC, against the REAL SGLang code (0.5.12 or 0.5.23, per nox session).

Real: SGLang's ``MHATokenToKVPool`` (device pool, built on "cpu" exactly as SGLang's own
``storage/aibrix_kvcache/unit_test.py`` does), ``MHATokenToKVPoolHost`` and its ``ALLOC_MEMORY_FUNCS``
allocation path, its ``load_to_device_per_layer`` / ``backup_from_device_all_layer`` with the ``direct``
IO backend, SGLang's server-argument resolution for the IO backend, and cc_runtime's CC emulator, whose
hook makes ``torch.cuda.cudart().cudaHostRegister`` return error 801.

Stand-ins, only for what cannot exist on a CPU-only machine, each named where it is used:
* ``GpuCudart``: the cudart a GPU machine's torch returns (torch.cuda.cudart() needs a driver); the
  emulator wraps it exactly as it wraps the real one, so the 801 comes from the emulator.
* ``malloc_host_alloc``: cudaHostAlloc needs libcuda; libc malloc gives the same kind of memory to CPU code.
* ``transfer_kv_direct``: sgl_kernel's op needs libcuda; the stand-in does what the op does (copy the
  indexed token rows of each layer); the "device" pool is CPU tensors.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import cc_runtime  # noqa: E402
from cc_runtime import runtime  # noqa: E402
from cc_runtime.patching import installed_version  # noqa: E402

pytestmark = [pytest.mark.upstream, pytest.mark.timeout(300)]

PAGE = 4


@pytest.fixture
def sglang_version() -> str:
    wanted = os.environ.get("CC_RUNTIME_TEST_SGLANG")
    if not wanted:
        pytest.skip("not in an upstream-* nox session (CC_RUNTIME_TEST_SGLANG unset)")
    pytest.importorskip("sglang")
    got = installed_version("sglang")
    assert got == wanted, f"session promised SGLang {wanted}, found {got}"
    return got


class GpuCudart:
    """Stand-in for the driver-backed ``torch.cuda.cudart()`` of a GPU machine: registration succeeds."""

    class cudaError(int):  # noqa: N801 - torch's pybind enum name
        pass

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def cudaHostRegister(self, ptr: int, size: int, flags: int) -> Any:  # noqa: N802
        self.calls.append(("register", size))
        return self.cudaError(0)

    def cudaHostUnregister(self, ptr: int) -> Any:  # noqa: N802
        self.calls.append(("unregister", ptr))
        return self.cudaError(0)

    def cudaGetErrorString(self, rc: Any) -> str:  # noqa: N802
        return "operation not supported" if int(rc) == 801 else f"error {int(rc)}"


class Spy:
    """Records what SGLang got back from whatever ``torch.cuda.cudart()`` is now (the emulator's wrapper)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.register_rcs: list[int] = []

    def cudaHostRegister(self, *args: Any) -> Any:  # noqa: N802
        rc = self.inner.cudaHostRegister(*args)
        self.register_rcs.append(int(rc))
        return rc

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def emulated_cc(sglang_version: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    """CC emulated by cc_runtime's emulator (h100 profile): cudaHostRegister now fails with 801."""
    from cc_runtime.emulator import SimDevice
    from cc_runtime.emulator import cuda as ec

    gpu = GpuCudart()
    monkeypatch.setattr(torch.cuda, "cudart", lambda: gpu)
    sim = SimDevice(None, name="hicache")
    runtime._reset_for_tests()
    em = ec.enable("h100", backend=ec.StandInBackend(sim.Stream()))
    assert em.profile.host_register_fails
    refusing = torch.cuda.cudart  # the emulator's hook
    spy = Spy(None)
    monkeypatch.setattr(torch.cuda, "cudart", lambda: (setattr(spy, "inner", refusing()), spy)[1])
    spy.gpu = gpu  # type: ignore[attr-defined]
    try:
        yield spy
    finally:
        runtime._reset_for_tests()
        ec.disable()
        sim.shutdown(timeout=5)


def _sg(version: str) -> SimpleNamespace:
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool

    if version == "0.5.12":
        from sglang.srt.mem_cache import memory_pool_host as host_mod
    else:
        from sglang.srt.mem_cache.pool_host import mha as host_mod
    return SimpleNamespace(MHATokenToKVPool=MHATokenToKVPool, host_mod=host_mod,
                           Host=host_mod.MHATokenToKVPoolHost)


def make_pools(version: str, layout: str = "layer_first") -> tuple[Any, Any]:
    sg = _sg(version)
    kv = sg.MHATokenToKVPool(64, PAGE, torch.float16, 2, 8, 3, "cpu", False, start_layer=0, end_layer=2)
    if version == "0.5.12":
        host = sg.Host(kv, 2.0, 0, PAGE, layout)
    else:
        host = sg.Host(kv.get_device_pool_infos()[0].buffer_info, 2, 0, PAGE, layout,
                       device_capacity_tokens=kv.size, start_layer=kv.start_layer, end_layer=kv.end_layer,
                       write_back_staging=kv.hicache_write_back_staging)
    return kv, host


class MallocHostAlloc:
    """Stand-in for cudaHostAlloc (needs libcuda): libc malloc, with the frees recorded."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None)
        self.libc.malloc.restype = ctypes.c_void_p
        self.libc.free.argtypes = [ctypes.c_void_p]
        self.allocated: list[tuple[int, int]] = []
        self.freed: list[int] = []

    def __call__(self, nbytes: int) -> tuple[int, Any]:
        ptr = int(self.libc.malloc(nbytes))
        self.allocated.append((ptr, nbytes))

        def free() -> None:
            self.freed.append(ptr)
            self.libc.free(ptr)

        return ptr, free


@pytest.fixture
def patched(emulated_cc: Spy) -> Any:
    cc_runtime.activate(cc="1")
    name = "sglang.hicache_host_pool_inline" if installed_version("sglang") == "0.5.12" else "sglang.hicache_host_pool"
    return runtime.manager().records[name]


def test_pool_creation_fails_under_cc_without_the_patch(sglang_version: str, emulated_cc: Spy) -> None:
    if sglang_version == "0.5.12":
        # 0.5.12 ignores cudaHostRegister's return code: the pool "starts" unpinned with the 801 dropped
        # (left pending for the next CUDA error check); 0.5.13+ raise, as checked below.
        make_pools(sglang_version)
        assert emulated_cc.register_rcs and set(emulated_cc.register_rcs) == {801}
    else:
        with pytest.raises(RuntimeError, match="rc=801"):
            make_pools(sglang_version)
        assert emulated_cc.register_rcs == [801]


def test_pool_creation_succeeds_with_the_patch_on_cuda_host_alloc(
        sglang_version: str, emulated_cc: Spy, patched: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from cc_runtime.patches import sglang_hicache

    assert patched.status in ("pending", "applied"), patched.reason
    _sg(sglang_version)  # imports the pool module: the post-import hook applies the patch
    assert patched.status == "applied", patched.reason
    alloc = MallocHostAlloc()
    monkeypatch.setattr(sglang_hicache, "cuda_host_alloc", alloc)
    with caplog.at_level(logging.INFO, logger="cc_runtime"):
        kv, host = make_pools(sglang_version)
    assert emulated_cc.register_rcs == [], "cudaHostRegister must not be called under CC"
    buffers = host.kv_buffer if isinstance(host.kv_buffer, (list, tuple)) else [host.kv_buffer]
    ptrs = {p for p, _ in alloc.allocated}
    assert {b.data_ptr() for b in buffers} <= ptrs and alloc.allocated
    assert any("cudaHostAlloc" in r.getMessage() and "801" in r.getMessage() for r in caplog.records)
    if hasattr(host, "destroy"):
        host.destroy()
        assert ("unregister" not in {c[0] for c in emulated_cc.gpu.calls})  # type: ignore[attr-defined]


def test_pageable_fallback_when_cuda_host_alloc_fails(
        sglang_version: str, emulated_cc: Spy, patched: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Real cuda-python here: on a machine without a driver its cudaHostAlloc fails, as it can under CC
    # when pinnable memory runs out.
    _sg(sglang_version)
    with caplog.at_level(logging.WARNING, logger="cc_runtime"):
        kv, host = make_pools(sglang_version)
    assert emulated_cc.register_rcs == []
    assert host.kv_buffer is not None
    assert any("pageable" in r.getMessage() and "cudaHostAlloc unavailable" in r.getMessage()
               for r in caplog.records)


def _direct_transfer_standin(calls: list[int]) -> Any:
    """What sgl_kernel's ``transfer_kv_direct`` does (it needs libcuda): copy indexed rows, per layer."""

    def transfer_kv_direct(src_layers: Any, dst_layers: Any, src_indices: Any, dst_indices: Any,
                           page_size: int) -> None:
        calls.append(len(src_layers))
        for src, dst in zip(src_layers, dst_layers, strict=True):
            dst.index_copy_(0, dst_indices.to(dst.device), src.index_select(0, src_indices.to(src.device)))

    return transfer_kv_direct


@pytest.mark.parametrize("pinned", [True, False], ids=["cuda_host_alloc", "pageable"])
def test_transfers_between_host_and_device_pools_move_the_right_bytes(
        sglang_version: str, emulated_cc: Spy, patched: Any, monkeypatch: pytest.MonkeyPatch,
        pinned: bool) -> None:
    from cc_runtime.patches import sglang_hicache

    sg = _sg(sglang_version)
    if pinned:
        monkeypatch.setattr(sglang_hicache, "cuda_host_alloc", MallocHostAlloc())
    calls: list[int] = []
    monkeypatch.setattr(sg.host_mod, "transfer_kv_direct", _direct_transfer_standin(calls), raising=False)
    kv, host = make_pools(sglang_version)
    g = torch.Generator().manual_seed(7)
    for buf in list(kv.k_buffer) + list(kv.v_buffer):
        buf.copy_(torch.randn(buf.shape, generator=g).to(buf.dtype))
    want_k = [b.clone() for b in kv.k_buffer]
    want_v = [b.clone() for b in kv.v_buffer]
    device_idx = torch.arange(8, 16, dtype=torch.int64)  # two pages on the device
    host_idx = torch.arange(40, 48, dtype=torch.int64)  # two other pages on the host

    host.backup_from_device_all_layer(kv, host_idx, device_idx, "direct")
    for layer in range(len(want_k)):
        assert torch.equal(host.k_buffer[layer][host_idx], want_k[layer][device_idx])
        assert torch.equal(host.v_buffer[layer][host_idx], want_v[layer][device_idx])
    for buf in list(kv.k_buffer) + list(kv.v_buffer):
        buf.zero_()  # evicted on the device
    back_idx = torch.arange(24, 32, dtype=torch.int64)
    for layer in range(len(want_k)):
        host.load_to_device_per_layer(kv, host_idx, back_idx, layer, "direct")
        assert torch.equal(kv.k_buffer[layer][back_idx], want_k[layer][device_idx])
        assert torch.equal(kv.v_buffer[layer][back_idx], want_v[layer][device_idx])
        assert not kv.k_buffer[layer][device_idx].any()
    assert calls, "the direct IO path must have been taken"


def _resolve_io(version: str, io_backend: str, layout: str) -> tuple[str, str]:
    """SGLang's own server-argument resolution for HiCache, as the launcher runs it."""
    from sglang.srt.server_args import ServerArgs

    if version == "0.5.12":
        args = object.__new__(ServerArgs)
        args.hicache_io_backend, args.hicache_mem_layout = io_backend, layout
        args._resolve_layout_io_compatibility()
        return args.hicache_io_backend, args.hicache_mem_layout
    from sglang.srt.arg_groups import hicache_hook

    args = SimpleNamespace(hicache_io_backend=io_backend, hicache_mem_layout=layout)
    hicache_hook.resolve_layout_io_compatibility(args)
    view = hicache_hook.resolving_view(args)
    return view.hicache_io_backend, view.hicache_mem_layout


def test_io_backend_kernel_is_steered_to_direct_under_cc(
        sglang_version: str, caplog: pytest.LogCaptureFixture) -> None:
    runtime._reset_for_tests()
    try:
        assert _resolve_io(sglang_version, "kernel", "page_first") == ("kernel", "page_first")  # upstream
        cc_runtime.activate(cc="1")
        rec = runtime.manager().records["sglang.hicache_io_backend"]
        assert rec.status == "applied", rec.reason
        with caplog.at_level(logging.WARNING, logger="cc_runtime"):
            assert _resolve_io(sglang_version, "kernel", "page_first") == ("direct", "page_first_direct")
        assert any("UVA" in r.getMessage() and "direct" in r.getMessage() for r in caplog.records)
        assert _resolve_io(sglang_version, "direct", "layer_first") == ("direct", "layer_first")
    finally:
        runtime._reset_for_tests()
    assert _resolve_io(sglang_version, "kernel", "layer_first") == ("kernel", "layer_first")  # reverted
