"""``cc-runtime bench readback``: result format, how it measures, and correctness (never its timings:
those are the benchmark's job, not a unit test's)."""

from __future__ import annotations

import threading
import time

import pytest

from cc_runtime.bench.common import BenchContext, ratio_spread, thread_cpu_clock


def _ctx(device: str, **extra: object) -> BenchContext:
    return BenchContext(quick=True, device=device, emulate="h100", extra=dict(extra))


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@pytest.mark.timeout(180)
def test_simulated_run_reports_the_contracted_summary(monkeypatch):
    from cc_runtime.bench import readback

    seen: dict[tuple[int, str], list] = {}
    real_loop = readback.run_loop

    def spy(env, arm, bs, cfg, steps):
        run = real_loop(env, arm, bs, cfg, steps)
        seen.setdefault((bs, arm), []).append(run)
        return run

    monkeypatch.setattr(readback, "run_loop", spy)
    result = readback.run(_ctx("cpu", batch_sizes="1,64", steps=20, step_ms=1.0, reps=2, host_us=100))
    s = result.summary
    for key in ("ratio_vs_cc_off", "ratio_vs_cc_off_same_path", "uncorrected_ratio_vs_cc_off", "speedup_vs_inline",
                "host_cpu_us_per_step_added", "worker_cpu_us_per_step", "worker_floor_cpu_us_per_step",
                "worker_cpu_over_floor_us_per_step"):
        assert s[key]["n"] == 2, key  # one value per repetition
        assert s[key]["min"] <= s[key]["median"] <= s[key]["max"], key
        assert s[key]["batch"] in (1, 64), key
    assert "worker_own_cpu_us_per_step" not in s and "worker_cc_charge_cpu_us_per_step" not in s
    if s["worker_cpu_us_per_step"] is None:
        pytest.skip("no per-thread CPU clocks on this platform")
    # Worker CPU is the worker thread's whole CPU (nothing subtracted), the floor comes from the floor
    # arm of the same run, and the difference is taken within each repetition, not between medians.
    for row in result.rows:
        bs = row["batch"]
        total = [r.worker_cpu_us for r in seen[(bs, "cc_runtime")]]
        floor = [r.worker_cpu_us for r in seen[(bs, readback.FLOOR_ARM)]]
        assert (row["worker_cpu_us"]["min"], row["worker_cpu_us"]["max"]) == (min(total), max(total))
        assert (row["worker_floor_cpu_us"]["min"], row["worker_floor_cpu_us"]["max"]) == (min(floor), max(floor))
        diffs = sorted(t - f for t, f in zip(total, floor, strict=True))
        assert (row["worker_over_floor_us"]["min"], row["worker_over_floor_us"]["max"]) == pytest.approx(
            (diffs[0], diffs[-1]))
    assert s["readback_errors"] == 0
    assert s["transfers_per_step"]["max"] == 1.0, "one crossing per step with cc_runtime"
    assert s["inline_transfers_per_step"]["min"] == 4.0, "upstream reads the four outputs one by one"
    # Counted by the simulated device's own copy counter, and the entry says so.
    assert "SimDevice.stats['copies_d2h']" in s["transfers_per_step"]["counter"]
    assert [r["batch"] for r in result.rows] == [1, 64]
    assert set(readback.COLUMNS) <= set(result.rows[0])
    assert "simulated" in result.title
    # Configuration is not a measurement: it lives under model, with its source.
    for key in ("step_ms", "host_us", "host_us_per_req"):
        assert key not in s and result.model[key]["source"], key
    assert result.model["host_us"]["value"] == 100


@pytest.mark.timeout(120)
def test_crossings_are_counted_by_the_device_not_by_the_code_under_test(monkeypatch):
    """A hidden extra copy inside cc_runtime's readback (one the worker's own counter never sees) shows
    up in transfers_per_step."""
    from cc_runtime.bench import readback
    from cc_runtime.bench.readback_env import arm_env
    from cc_runtime.readback import coalesce

    real = coalesce.read_coalesced

    def with_a_hidden_copy(*args, **kwargs):
        out = real(*args, **kwargs)
        env.sim.copy_(torch.empty(4, dtype=torch.int64), env.sim.zeros((4,), dtype=torch.int64))
        return out

    torch = pytest.importorskip("torch")
    monkeypatch.setattr(coalesce, "read_coalesced", with_a_hidden_copy)
    cfg = readback.Config(step_s=1e-3, step_per_req_s=0.0, host_us=0.0, host_us_per_req=0.0, steps=10,
                          warmup=2, reps=1, batch_sizes=[4])
    with arm_env(_ctx("cpu"), "cc_runtime", cfg.step_s, cfg.mm_reps) as env:
        run = readback.run_loop(env, "cc_runtime", 4, cfg, cfg.steps)
    assert run.transfers_per_step == 2.0 and run.errors == 0


def test_ratio_above_one_reads_as_noise_never_as_a_gain():
    assert "reading" not in ratio_spread([0.9, 0.95, 0.97])
    assert "noise" in ratio_spread([0.98, 1.01, 0.99])["reading"]
    always_above = ratio_spread([1.02, 1.05, 1.03])["reading"]
    assert "not a gain" in always_above and "noise" not in always_above and "not explained" in always_above
    assert "a bigger baseline" in ratio_spread([1.02, 1.05], above_one="a bigger baseline")["reading"]


def test_summary_pairs_arms_within_a_repetition_and_reports_the_worst_batch(monkeypatch):
    """Scripted arm results (no timing): ratios per repetition, the worst batch, CPU added per step."""
    from cc_runtime.bench import readback

    # steps/s per (batch, arm) and repetition; scheduler CPU us per step; worker CPU us per step.
    script = {
        (1, "cc_off"): [(100.0, 50.0, None), (200.0, 50.0, None), (100.0, 50.0, None)],
        (1, "cc_off_runtime"): [(110.0, 50.0, 10.0), (200.0, 50.0, 10.0), (100.0, 50.0, 10.0)],
        (1, "cc_inline"): [(50.0, 80.0, None), (100.0, 80.0, None), (50.0, 80.0, None)],
        (1, "cc_runtime"): [(99.0, 60.0, 20.0), (190.0, 70.0, 25.0), (101.0, 55.0, 21.0)],
        (8, "cc_off"): [(100.0, 50.0, None)] * 3,
        (8, "cc_off_runtime"): [(100.0, 50.0, 10.0)] * 3,
        (8, "cc_inline"): [(40.0, 90.0, None)] * 3,
        (8, "cc_runtime"): [(90.0, 52.0, 40.0), (80.0, 51.0, 41.0), (95.0, 53.0, 39.0)],
        (1, "worker_floor"): [(100.0, 50.0, 12.0), (100.0, 50.0, 14.0), (100.0, 50.0, 13.0)],
        (8, "worker_floor"): [(100.0, 50.0, 9.0), (100.0, 50.0, 11.0), (100.0, 50.0, 30.0)],
    }
    calls = {k: 0 for k in script}

    def fake_loop(env, arm, bs, cfg, steps):
        sps, sched, worker = script[(bs, arm)][calls[(bs, arm)]]
        calls[(bs, arm)] += 1
        return readback.ArmRun(sps, 1.0 if arm == "cc_runtime" else 4.0, 0, sched, worker)

    monkeypatch.setattr(readback, "run_loop", fake_loop)
    s = readback.run(_ctx("cpu", batch_sizes="1,8", steps=5, reps=3)).summary
    assert s["ratio_vs_cc_off"]["batch"] == 8
    assert s["ratio_vs_cc_off"]["median"] == pytest.approx(0.90)
    assert (s["ratio_vs_cc_off"]["min"], s["ratio_vs_cc_off"]["max"]) == pytest.approx((0.80, 0.95))
    # Against cc_runtime's own path with CC off: batch 1's repetitions 0.9, 0.95, 1.01.
    assert s["ratio_vs_cc_off_same_path"]["batch"] == 8
    assert s["ratio_vs_cc_off_same_path"]["median"] == pytest.approx(0.90)
    assert s["uncorrected_ratio_vs_cc_off"]["median"] == pytest.approx(0.40)
    assert s["speedup_vs_inline"]["batch"] == 1 and s["speedup_vs_inline"]["median"] == pytest.approx(1.98)
    assert s["host_cpu_us_per_step_added"]["batch"] == 1
    assert s["host_cpu_us_per_step_added"]["median"] == pytest.approx(10.0)
    assert s["worker_cpu_us_per_step"] == {"median": 40.0, "min": 39.0, "max": 41.0, "n": 3, "batch": 8}
    # The floor is the worker thread's CPU in its own arm, never mixed into the cc_runtime arm's keys.
    assert s["worker_floor_cpu_us_per_step"] == {"median": 13.0, "min": 12.0, "max": 14.0, "n": 3, "batch": 1}
    # Over the floor, within each repetition: batch 8 gives 31, 30, 9 (a difference of medians would
    # give 29, and pairing repetitions wrongly would give other values).
    assert s["worker_cpu_over_floor_us_per_step"] == {"median": 30.0, "min": 9.0, "max": 31.0, "n": 3, "batch": 8}
    assert all(n == 3 for n in calls.values())


def test_a_ratio_above_one_in_every_repetition_names_its_bias(monkeypatch):
    """cc_runtime faster than upstream's CC-off arm in every repetition is a baseline with more work on
    the scheduler thread, said so in the entry; it is not called noise, and never a gain."""
    from cc_runtime.bench import readback

    def fake_loop(env, arm, bs, cfg, steps):
        sps = {"cc_off": 100.0, "cc_off_runtime": 104.0, "cc_inline": 80.0, "cc_runtime": 103.0}.get(arm, 100.0)
        return readback.ArmRun(sps, 1.0, 0, 50.0, 10.0 if arm in ("cc_runtime", "worker_floor") else None)

    monkeypatch.setattr(readback, "run_loop", fake_loop)
    s = readback.run(_ctx("cpu", batch_sizes="4", steps=5, reps=2)).summary
    reading = s["ratio_vs_cc_off"]["reading"]
    assert "not a gain" in reading and "noise" not in reading and "upstream's readback" in reading
    assert "reading" not in s["ratio_vs_cc_off_same_path"]


@pytest.mark.timeout(120)
def test_floor_arm_runs_the_worker_thread_without_reading_anything_back():
    """The floor is a worker that waits for each step and signals it: no crossing, its CPU measured."""
    from cc_runtime.bench import readback
    from cc_runtime.bench.readback_env import arm_env

    cfg = readback.Config(step_s=1e-3, step_per_req_s=0.0, host_us=0.0, host_us_per_req=0.0, steps=20,
                          warmup=2, reps=1, batch_sizes=[4])
    with arm_env(_ctx("cpu"), readback.FLOOR_ARM, cfg.step_s, cfg.mm_reps) as env:
        run = readback.run_loop(env, readback.FLOOR_ARM, 4, cfg, cfg.steps)
        completed = env.worker.completed
    assert run.transfers_per_step == 0 and run.errors == 0
    assert completed == cfg.warmup + cfg.steps, "every step went through the worker thread"
    if run.worker_cpu_us is None:
        pytest.skip("no per-thread CPU clocks on this platform")
    assert run.worker_cpu_us > 0


def test_thread_cpu_clock_reads_another_threads_cpu_not_its_wall_time():
    done = threading.Event()
    busy = threading.Thread(target=lambda: (_burn(0.05), done.wait(5)))
    idle = threading.Thread(target=lambda: done.wait(5))
    busy.start(), idle.start()
    busy_clock, idle_clock = thread_cpu_clock(busy), thread_cpu_clock(idle)
    if busy_clock is None or idle_clock is None:
        done.set()
        pytest.skip("no per-thread CPU clocks on this platform")
    time.sleep(0.15)
    busy_s, idle_s = busy_clock(), idle_clock()
    done.set()
    busy.join(), idle.join()
    assert busy_s >= 0.04 and idle_s < 0.02


@pytest.mark.timeout(120)
def test_host_work_holds_the_cpu_on_the_scheduler_thread():
    """The scheduler's bookkeeping is Python on the CPU (GIL held), not a sleep: its CPU time counts."""
    from cc_runtime.bench import readback
    from cc_runtime.bench.readback_env import arm_env

    cfg = readback.Config(step_s=1e-3, step_per_req_s=0.0, host_us=2000.0, host_us_per_req=0.0, steps=10,
                          warmup=2, reps=1, batch_sizes=[1])
    with arm_env(_ctx("cpu"), "cc_off", cfg.step_s, cfg.mm_reps) as env:
        run = readback.run_loop(env, "cc_off", 1, cfg, cfg.steps)
    assert run.sched_cpu_us > 1000, run
    assert run.worker_cpu_us is None


@pytest.mark.timeout(120)
def test_worker_cpu_is_measured_on_the_worker_thread(monkeypatch):
    """CPU the readback spends on the worker shows as worker CPU, not as scheduler CPU."""
    from cc_runtime.bench import readback
    from cc_runtime.bench.readback_env import arm_env
    from cc_runtime.readback import coalesce

    real = coalesce.read_coalesced

    def slow_read(*args, **kwargs):
        _burn(0.002)
        return real(*args, **kwargs)

    monkeypatch.setattr(coalesce, "read_coalesced", slow_read)
    cfg = readback.Config(step_s=4e-3, step_per_req_s=0.0, host_us=0.0, host_us_per_req=0.0, steps=10,
                          warmup=2, reps=1, batch_sizes=[1])
    with arm_env(_ctx("cpu"), "cc_runtime", cfg.step_s, cfg.mm_reps) as env:
        run = readback.run_loop(env, "cc_runtime", 1, cfg, cfg.steps)
    if run.worker_cpu_us is None:
        pytest.skip("no per-thread CPU clocks on this platform")
    assert run.worker_cpu_us >= 1800, run
    assert run.sched_cpu_us < 1500, run
    assert run.errors == 0


@pytest.mark.timeout(120)
def test_soak_checks_every_step():
    from cc_runtime.bench import readback

    result = readback.run(_ctx("cpu", batch_sizes="8", steps=5, step_ms=0.5, soak_steps=500, reps=1))
    s = result.summary
    assert s["soak_steps"] == 500 and s["soak_completed"] == 500 and s["soak_errors"] == 0


@pytest.mark.gpu
@pytest.mark.timeout(300)
def test_gpu_emulated_run():
    """Real kernels, CC from the emulator's torch hooks: correct results and one crossing per step."""
    from cc_runtime.bench import readback

    result = readback.run(_ctx("cuda", batch_sizes="1,256", steps=40, reps=2))
    assert result.summary["readback_errors"] == 0
    assert result.summary["transfers_per_step"]["max"] == 1.0
    assert result.summary["worker_cpu_us_per_step"]["n"] == 2


@pytest.mark.timeout(120)
def test_real_cc_machine_has_no_cc_off_arm(monkeypatch):
    """On a GPU in real CC mode there is no CC-off baseline: report the speed-up over inline instead."""
    from cc_runtime.bench import readback

    monkeypatch.setattr(readback, "real_cc", lambda ctx: True)
    result = readback.run(_ctx("cpu", batch_sizes="4", steps=10, step_ms=0.5, reps=2, host_us=50))
    s = result.summary
    assert s["ratio_vs_cc_off"] is None and s["uncorrected_ratio_vs_cc_off"] is None
    assert s["ratio_vs_cc_off_same_path"] is None
    assert s["host_cpu_us_per_step_added"] is None  # no CC-off arm to subtract
    assert s["speedup_vs_inline"]["n"] == 2
    assert result.rows[0]["cc_off_steps_s"] is None
    assert result.title.endswith("cc_runtime") and "real CC" in result.title


@pytest.mark.timeout(120)
def test_a_registered_peer_arm_runs_beside_the_others_or_is_skipped_with_its_reason(monkeypatch):
    """The hook a peer's readback (another engine's worker) uses: one register() call, run in the same
    repetitions; an arm that cannot run here is left out with its reason."""
    from cc_runtime.bench import readback, readback_arms

    peer = readback_arms.Arm("peer_inline", cc=True, worker=False, submit=lambda env, outs: env.inline_readback(outs),
                             description="a peer stand-in")
    absent = readback_arms.Arm("peer_absent", cc=True, worker=False, submit=lambda env, outs: None,
                               description="not importable here", skip=lambda ctx: "peer not installed")
    monkeypatch.setattr(readback_arms, "DEFAULT", list(readback_arms.DEFAULT))
    monkeypatch.setattr(readback, "DEFAULT", readback_arms.DEFAULT)
    monkeypatch.setitem(readback_arms.ARMS, "peer_inline", peer)
    monkeypatch.setitem(readback_arms.ARMS, "peer_absent", absent)
    readback_arms.register(peer)
    readback_arms.register(absent)
    result = readback.run(_ctx("cpu", batch_sizes="4", steps=5, step_ms=0.5, reps=2, host_us=50))
    assert result.rows[0]["peer_inline_steps_s"] > 0
    assert "peer_absent_steps_s" not in result.rows[0]
    assert "arm peer_absent not run: peer not installed" in result.notes
