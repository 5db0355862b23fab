"""``cc-runtime bench step`` on the simulated device: structure, counts and correctness (no timing claims)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from cc_runtime.bench.common import BenchContext  # noqa: E402


def test_step_bench_counts_crossings_and_reports_spreads():
    from cc_runtime.bench import step

    ctx = BenchContext(quick=True, device="cpu", emulate="h100",
                       extra={"batch_sizes": "4", "prefill_tokens": "1024", "steps": 6, "reps": 2})
    result = step.run(ctx)
    s = result.summary
    for key in ("ratio_vs_cc_off", "ratio_vs_cc_off_same_path", "ratio_vs_cc_off_readback_only",
                "uncorrected_ratio_vs_cc_off", "staging_cpu_us_per_step", "staging_cpu_us_per_step_prefill",
                "h2d_transfers_per_step", "d2h_transfers_per_step"):
        assert set(s[key]) >= {"median", "min", "max", "n"}, key
        assert s[key]["n"] == 2, key  # one value per repetition
    assert s["errors"] == 0, "every input and every read-back token must be the one written for its step"
    assert s["h2d_transfers_per_step"]["max"] == 1.0, "decode: one staged crossing per step"
    assert s["h2d_transfers_per_step_prefill"]["max"] == 1.0
    assert s["h2d_transfers_per_step_upstream"]["max"] == 7.0  # prefill: 7 inline input copies upstream
    assert s["d2h_transfers_per_step"]["max"] == 1.0
    assert s["d2h_transfers_per_step_upstream"]["max"] == 4.0
    for key in ("h2d_transfers_per_step", "d2h_transfers_per_step", "h2d_transfers_per_step_upstream"):
        assert "SimDevice.stats" in s[key]["counter"], key  # the device's own counter, named
    assert s["staging_cpu_us_per_step_prefill"]["tokens"] == 1024 and s["staging_cpu_us_per_step"]["batch"] == 4
    assert {r["loop"] for r in result.rows} == {"decode", "prefill"}
    for row in result.rows:  # every arm's crossings, by the device's counters
        for arm in step.ARMS:
            assert row[f"h2d_{arm}"] is not None and row[f"d2h_{arm}"] is not None, arm
    assert all("source" in v for v in result.model.values()), "computed values name their source"


def test_the_cc_runtime_arm_runs_the_deferred_scope_with_interception_and_a_d2d_copy(monkeypatch):
    """What ships: each input is a ``.to(device)`` the scope intercepts, flushed as one crossing plus a
    device-to-device copy, on the CC arm and on the same-path CC-off arm, and nowhere else."""
    from cc_runtime.bench import step
    from cc_runtime.staging import deferred

    flushes: list[tuple[int, int]] = []
    real_flush = deferred.Collector.flush

    def counting_flush(self):
        d2d0 = self.stager.backend.sim.stats["copies_d2d"]
        carried = real_flush(self)
        if carried:
            flushes.append((carried, self.stager.backend.sim.stats["copies_d2d"] - d2d0))
        return carried

    monkeypatch.setattr(deferred.Collector, "flush", counting_flush)
    arms: list[str] = []
    real_loop = step._run_loop

    counts: list[tuple[str, str, int]] = []

    def spy(dev, worker, stager, loop, *args, **kwargs):
        before = len(flushes)
        out = real_loop(dev, worker, stager, loop, *args, **kwargs)
        mine = flushes[before:]
        arms.append(f"{dev.sim.name}:{loop}:{sum(n for n, _ in mine)}")
        counts.append((dev.sim.name, loop, len(mine)))
        return out

    monkeypatch.setattr(step, "_run_loop", spy)
    s = step.run(BenchContext(quick=True, device="cpu", emulate="h100",
                              extra={"batch_sizes": "2", "prefill_tokens": "512", "steps": 4, "reps": 1})).summary
    total = 8 + 4  # warm-up + measured steps
    inputs = {"decode": 3, "prefill": 7}
    deferred_arms = ("cc_off_runtime", "cc_runtime")
    # Every step's inputs are carried by the scope's flushes (decode 3, prefill 7), on those two arms only.
    assert sorted(arms) == sorted(f"sim-{arm}:{loop}:{total * n if arm in deferred_arms else 0}"
                                  for arm in step.ARMS for loop, n in inputs.items())
    # One flush per step, at the scope's end: a device sync on another thread (the readback worker's copy,
    # a simulated stream's kernel) must not flush the scheduler's scope early and split a step in two.
    for name, loop, n in counts:
        assert n == (total if name.removeprefix("sim-") in deferred_arms else 0), (name, loop, n)
    assert all(d2d >= 1 for _, d2d in flushes), "the placeholders are filled by a device-to-device copy"
    assert s["errors"] == 0


def test_a_hidden_extra_crossing_in_the_stager_is_counted(monkeypatch):
    """The counts come from the device: a second crossing the stager makes without counting it shows."""
    import torch

    from cc_runtime.bench import step
    from cc_runtime.staging import H2DStager

    real = H2DStager.cross  # the one crossing a deferred scope's flush makes

    def with_a_hidden_copy(self, slot, layout):
        self.backend.sim.to_device(torch.zeros(4))
        return real(self, slot, layout)

    monkeypatch.setattr(H2DStager, "cross", with_a_hidden_copy)
    s = step.run(BenchContext(quick=True, device="cpu", emulate="h100",
                              extra={"batch_sizes": "2", "prefill_tokens": "512", "steps": 4, "reps": 1})).summary
    assert s["h2d_transfers_per_step"]["max"] == 2.0


def test_step_bench_runs_torch_single_threaded_on_the_simulated_device_and_restores_it(monkeypatch):
    """A parallel pack competing with the simulated device's threads costs ms on a small machine (an
    artefact no GPU host has): the simulated runs use one intra-op thread, and the caller's setting
    comes back afterwards."""
    import torch

    from cc_runtime.bench import step

    seen: list[int] = []
    real = step._run_loop

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(step, "_run_loop", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        step.run(BenchContext(quick=True, device="cpu", emulate="h100",
                              extra={"batch_sizes": "1", "prefill_tokens": "128", "steps": 2, "reps": 1}))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
