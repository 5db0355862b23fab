"""``pinned_reads_unpinned``: under CC, ``Tensor.is_pinned()`` is reported to read False for pinned memory
(NVIDIA/TensorRT PR 4740; torch's ``CUDAHooks::isPinnedPtr``). The switch is off in every built-in profile;
under it the simulated device and the GPU emulator's hooks read False, while copies still cost what pinned
memory costs, and cc_runtime's own copy choices do not follow the reading.

Real torch, the real simulated device and the real emulator install; the GPU emulator's backend is the
stand-in backend (no GPU on CPU CI), and a CPU tensor's own ``is_pinned()`` is always False without a
GPU, so the hook is driven with an ``orig`` that reports pinned memory.
"""

from __future__ import annotations

import dataclasses
import types

import pytest

torch = pytest.importorskip("torch")

from cc_runtime.emulator import SimDevice, load_profile  # noqa: E402
from cc_runtime.emulator import cuda as ec  # noqa: E402
from cc_runtime.emulator.charge import is_pinned as emulator_is_pinned  # noqa: E402
from cc_runtime.emulator.tensor_hooks import hook_is_pinned  # noqa: E402
from cc_runtime.staging.stager import H2DStager  # noqa: E402

QUIRK = dataclasses.replace(load_profile("h100"), name="h100-quirk", pinned_reads_unpinned=True)


def test_off_in_every_builtin_profile() -> None:
    for name in ("h100", "h200", "b200", "b300", "off"):
        assert load_profile(name).pinned_reads_unpinned is False


def test_simulated_device_reads_unpinned_but_copies_at_the_pinned_cost() -> None:
    with SimDevice(QUIRK) as sim, SimDevice("h100") as plain:
        host, pageable = torch.zeros(64, dtype=torch.uint8), plain.mark_pageable(torch.zeros(64, dtype=torch.uint8))
        assert plain.is_pinned(host) and not plain.is_pinned(pageable)
        assert not sim.is_pinned(host)  # the reported CC reading
        sim.copy_(sim.zeros(64, dtype=torch.uint8), host)
        # The copy was a pinned one (its cost and semantics), whatever is_pinned() said.
        assert sim.stats["copies_h2d"] == 1 and sim.stats["pageable_h2d"] == 0
    with SimDevice(dataclasses.replace(QUIRK, name="off-quirk", cc=False)) as off:
        assert off.is_pinned(torch.zeros(4))  # CC off: the reading is true


def test_hook_reads_false_for_pinned_host_memory_only_while_active() -> None:
    em = types.SimpleNamespace(active=True)
    hooked = hook_is_pinned(em, lambda self, *a, **k: True)
    host = torch.zeros(4)
    assert hooked(host) is False
    em.active = False
    assert hooked(host) is True
    em.active = True
    fake_cuda = types.SimpleNamespace(device=torch.device("cuda", 0))
    assert hooked(fake_cuda) is True  # not host memory: untouched
    assert hook_is_pinned(em, lambda self: False)(host) is False


def test_install_hooks_is_pinned_only_under_the_switch_and_costs_ignore_it(monkeypatch) -> None:
    original = torch.Tensor.is_pinned
    with SimDevice(None) as sim:
        with ec.emulate("h100", backend=ec.StandInBackend(sim.Stream())):
            assert torch.Tensor.is_pinned is original
        with ec.emulate(QUIRK, backend=ec.StandInBackend(sim.Stream())):
            assert torch.Tensor.is_pinned is not original
            assert torch.zeros(4).is_pinned() is False
        assert torch.Tensor.is_pinned is original
    # The emulator's cost model asks torch's C method, not the (hookable) Python attribute.
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self, *a: True)  # what a hooked or lying attribute says
    assert emulator_is_pinned(torch.zeros(4)) is False


def test_stager_pass_through_under_cc_does_not_follow_is_pinned(monkeypatch) -> None:
    """Under CC the pass-through copy stays non_blocking (capturable for pinned memory; every CC H2D is
    host-synchronous, so no reader gets other bytes) even when is_pinned() reads False."""
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self, *a: False)
    with SimDevice(QUIRK) as sim:
        st = H2DStager(sim)
        seen: list[bool] = []
        real = st.backend.copy_to_device

        def spy(dst, src, non_blocking=False):
            seen.append(non_blocking)
            return real(dst, src, non_blocking=non_blocking)

        monkeypatch.setattr(st.backend, "copy_to_device", spy)
        out = st.stage([torch.arange(8)], passthrough=True).tensors()
        sim.synchronize()
        assert seen == [True] and out[0].tolist() == list(range(8))
