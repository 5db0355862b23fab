"""``hook_overhead_us_per_op`` (bench emulator): the launch-cost mode's own per-op cost, measured several
times with its spread, on the same path the emulator calibrates at install (host ops: nothing charged)."""

from __future__ import annotations

import torch

from cc_runtime.bench.emulator_hook import KEY, hook_overhead_summary, measure_hook_overhead
from cc_runtime.emulator import cuda as ec


def test_hook_overhead_is_measured_with_its_spread_and_charges_nothing(sim) -> None:
    with ec.emulate("h100", backend=ec.StandInBackend(sim.Stream())) as em:
        launches = em.stats["launches"]
        before_active = em.active
        out = hook_overhead_summary(em, repeats=3)
        assert em.active == before_active  # restored
        assert em.stats["launches"] == launches  # host ops are never charged
    s = out[KEY]
    assert s["n"] == 3 and 0 <= s["min"] <= s["median"] <= s["max"]
    # The mode really runs per op: a Python __torch_dispatch__ costs more than nothing.
    assert s["max"] > 0


def test_measure_restores_the_emulators_switch(sim) -> None:
    with ec.emulate("h100", backend=ec.StandInBackend(sim.Stream())) as em:
        pass
    assert not em.active
    vals = measure_hook_overhead(em, repeats=2)
    assert len(vals) == 2 and not em.active
    assert torch.zeros(1).add_(1).item() == 1.0
