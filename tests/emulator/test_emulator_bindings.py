"""CC's refusals through the CUDA bindings: cudaHostRegister / cuMemHostRegister (801) and multicast.

The real cuda-python modules are patched where they import (``cuda.bindings.runtime`` and ``.driver``
import on this CPU machine; the patched functions return before anything reaches libcuda, which is
absent here). Where cuda-python cannot import, a STAND-IN module object with cuda-python's calling
convention (every call returns a tuple ``(error, ...)``) takes its place: it stands in for a driver
binding that needs libcuda, and it also checks the public API on a caller's own module objects.
"""

from __future__ import annotations

import enum
import types

import pytest

from cc_runtime.emulator import load_profile
from cc_runtime.emulator.bindings import CUDA_ERROR_NOT_SUPPORTED, install_refusals
from cc_runtime.patching import Patch, PatchContext

H100 = load_profile("h100")


def _ctx() -> PatchContext:
    return PatchContext(Patch("t", "cuda", "", "", "", apply=lambda c: None))


def _stand_in_driver(calls: list[str]) -> types.ModuleType:
    """STAND-IN for ``cuda.bindings.driver`` (cuda-python's convention: tuple returns)."""

    class CUresult(enum.IntEnum):
        CUDA_SUCCESS = 0
        CUDA_ERROR_NOT_SUPPORTED = 801

    mod = types.ModuleType("stand_in_cuda_driver")
    mod.CUresult = CUresult  # type: ignore[attr-defined]
    mod.cuMemHostRegister = lambda p, n, f: (calls.append("register") or CUresult.CUDA_SUCCESS,)  # type: ignore[attr-defined]
    mod.cuMulticastCreate = lambda prop: (calls.append("create") or CUresult.CUDA_SUCCESS, "handle")  # type: ignore[attr-defined]
    mod.cuMulticastGetGranularity = lambda prop, opt: (calls.append("gran") or CUresult.CUDA_SUCCESS, 2 << 20)  # type: ignore[attr-defined]
    return mod


def _stand_in_runtime(calls: list[str]) -> types.ModuleType:
    """STAND-IN for ``cuda.bindings.runtime`` / the legacy ``cuda.cudart``."""

    class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's name
        cudaSuccess = 0
        cudaErrorNotSupported = 801

    mod = types.ModuleType("stand_in_cuda_runtime")
    mod.cudaError_t = cudaError_t  # type: ignore[attr-defined]
    mod.cudaHostRegister = lambda p, n, f: (calls.append("rt-register") or cudaError_t.cudaSuccess,)  # type: ignore[attr-defined]
    return mod


def test_stand_in_bindings_refuse_while_active_and_pass_through_otherwise() -> None:
    calls: list[str] = []
    drv, rt, legacy = _stand_in_driver(calls), _stand_in_runtime(calls), _stand_in_runtime(calls)
    originals = (drv.cuMemHostRegister, drv.cuMulticastCreate, drv.cuMulticastGetGranularity,
                 rt.cudaHostRegister, legacy.cudaHostRegister)
    on = [True]
    ctx = _ctx()
    done = install_refusals(ctx, H100, active=lambda: on[0], driver=drv, runtime=rt, legacy_cudart=legacy,
                            discover=False)
    assert {n for _o, n, _f in done} == {"cuMemHostRegister", "cuMulticastCreate", "cuMulticastGetGranularity",
                                         "cudaHostRegister"}
    assert drv.cuMemHostRegister(0, 4096, 0) == (drv.CUresult.CUDA_ERROR_NOT_SUPPORTED,)
    assert drv.cuMulticastGetGranularity(object(), 0) == (drv.CUresult.CUDA_ERROR_NOT_SUPPORTED, None)
    err, handle = drv.cuMulticastCreate(object())
    assert err == CUDA_ERROR_NOT_SUPPORTED and handle is None
    assert rt.cudaHostRegister(0, 4096, 0) == (rt.cudaError_t.cudaErrorNotSupported,)
    assert legacy.cudaHostRegister(0, 4096, 0)[0] == 801
    assert calls == []  # nothing reached the (stand-in) binding
    on[0] = False
    assert drv.cuMemHostRegister(0, 4096, 0) == (drv.CUresult.CUDA_SUCCESS,) and calls == ["register"]
    ctx.revert()
    assert (drv.cuMemHostRegister, drv.cuMulticastCreate, drv.cuMulticastGetGranularity, rt.cudaHostRegister,
            legacy.cudaHostRegister) == originals


@pytest.mark.parametrize(("host_register_fails", "multicast_unsupported"), [(True, False), (False, True)])
def test_only_what_the_profile_says_is_refused(host_register_fails: bool, multicast_unsupported: bool) -> None:
    import dataclasses

    calls: list[str] = []
    drv = _stand_in_driver(calls)
    prof = dataclasses.replace(H100, host_register_fails=host_register_fails,
                               multicast_unsupported=multicast_unsupported)
    ctx = _ctx()
    install_refusals(ctx, prof, driver=drv, discover=False)
    try:
        assert (drv.cuMemHostRegister(0, 1, 0)[0] == 801) is host_register_fails
        assert (drv.cuMulticastGetGranularity(None, 0)[0] == 801) is multicast_unsupported
    finally:
        ctx.revert()


def test_real_cuda_python_modules_are_refused_and_restored() -> None:
    runtime = pytest.importorskip("cuda.bindings.runtime")
    driver = pytest.importorskip("cuda.bindings.driver")
    before = (runtime.cudaHostRegister, driver.cuMemHostRegister, driver.cuMulticastCreate,
              driver.cuMulticastGetGranularity)
    ctx = _ctx()
    install_refusals(ctx, H100)  # discovers the installed bindings
    try:
        assert runtime.cudaHostRegister(0, 4096, 0) == (runtime.cudaError_t.cudaErrorNotSupported,)
        assert driver.cuMemHostRegister(0, 4096, 0) == (driver.CUresult.CUDA_ERROR_NOT_SUPPORTED,)
        prop = driver.CUmulticastObjectProp()
        flag = driver.CUmulticastGranularity_flags.CU_MULTICAST_GRANULARITY_RECOMMENDED
        assert driver.cuMulticastGetGranularity(prop, flag) == (driver.CUresult.CUDA_ERROR_NOT_SUPPORTED, None)
        assert driver.cuMulticastCreate(prop)[0] == driver.CUresult.CUDA_ERROR_NOT_SUPPORTED
    finally:
        ctx.revert()
    assert (runtime.cudaHostRegister, driver.cuMemHostRegister, driver.cuMulticastCreate,
            driver.cuMulticastGetGranularity) == before


def test_emulate_installs_the_binding_refusals(monkeypatch) -> None:
    import torch

    from cc_runtime.emulator import SimDevice
    from cc_runtime.emulator import cuda as ec

    driver = pytest.importorskip("cuda.bindings.driver")
    before = driver.cuMemHostRegister
    sim = SimDevice(None)
    try:
        with ec.emulate("h100", backend=ec.StandInBackend(sim.Stream())):
            assert driver.cuMemHostRegister(0, 1, 0)[0] == driver.CUresult.CUDA_ERROR_NOT_SUPPORTED
            assert torch.cuda.cudart is not None
    finally:
        ec.disable()
        sim.shutdown()
    assert driver.cuMemHostRegister is before
