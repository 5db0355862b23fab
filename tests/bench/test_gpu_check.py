"""``benchmarks/gpu_check.py`` without a GPU: the per-test limit works without pytest-timeout, a hung
test does not take the rest of the run with it, and the summary is on disk after every step.

Stand-ins, and why: there is no GPU here, so the "GPU tests" are three tiny tests written to a
temporary folder (one passes, one hangs, one after it passes) and run by the real pytest through the
real plugin; pytest-timeout is switched off (``-p no:timeout``) as on the device image.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


FAKE_TESTS = '''
import time
import pytest

@pytest.mark.gpu
def test_a_passes():
    pass

@pytest.mark.gpu
def test_b_hangs():
    time.sleep(600)

@pytest.mark.gpu
def test_c_runs_after_the_hang():
    pass

@pytest.mark.gpu
def test_d_fails():
    assert False, "broken"

def test_not_gpu():
    pass
'''


@pytest.mark.timeout(180)
def test_a_hung_test_is_cut_off_and_the_run_resumes_without_it(tmp_path):
    gpu_check = _load()
    tests = tmp_path / "fake"
    tests.mkdir()
    (tests / "test_fake_gpu.py").write_text(FAKE_TESTS)
    out = tmp_path / "out"
    out.mkdir()
    real_step = gpu_check._step

    def step_without_pytest_timeout(name, cmd, *a, **k):
        if cmd[1:3] == ["-m", "pytest"]:
            cmd = [*cmd[:3], "-p", "no:timeout", *cmd[3:]]
        return real_step(name, cmd, *a, **k)

    res = gpu_check.run_gpu_tests(out, [str(tests)], 120, 3, sys.executable, gpu_check._env(False),
                                  step_without_pytest_timeout)
    assert [n.rsplit("::", 1)[1] for n in res["timed_out"]] == ["test_b_hangs"]
    assert res["counts"] == {"passed": 2, "failed": 1}
    assert [n.rsplit("::", 1)[1] for n in res["failed"]] == ["test_d_fails"]
    assert res["status"] == "failed" and len(res["runs"]) == 2
    assert res["seconds"] < 60
    lines = [json.loads(ln) for ln in (out / "gpu_tests.jsonl").read_text().splitlines()]
    assert {ln["nodeid"].rsplit("::", 1)[1] for ln in lines if ln["event"] == "result"} == \
        {"test_a_passes", "test_c_runs_after_the_hang", "test_d_fails"}
    assert "test_b_hangs" in (out / "gpu_tests.log").read_text(), "faulthandler's stack dump names the test"


def test_the_summary_is_written_after_every_step(tmp_path, monkeypatch):
    """A check killed half-way still leaves the steps it finished, marked incomplete."""
    gpu_check = _load()
    calls = []

    def fake_step(name, cmd, timeout_s, log_path, stdout_path=None, **kw):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the device session ends here
        if stdout_path:
            stdout_path.write_text(json.dumps({"gpu": {"devices": ["fake GPU"]}}))
        return {"step": name, "status": "ok", "seconds": 0.0, "log": log_path.name}

    monkeypatch.setattr(gpu_check, "_step", fake_step)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main([str(tmp_path), "--skip-tests", "--only", "timer,readback"])
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["complete"] is False and summary["ok"] is False
    assert [s["step"] for s in summary["steps"]] == ["doctor"]
    assert summary["device"] == ["fake GPU"]


def test_full_check_runs_calibrate_the_round_trip_and_bench_step_before_the_longest_benchmark(tmp_path, monkeypatch):
    """The full check: calibrate with CC off, the emulator's imposition round trip of h100 and ``bench step``
    on CUDA (issues 11, 12) come before prefill, so a spent budget drops prefill, not them."""
    gpu_check = _load()
    cmds: dict[str, list[str]] = {}

    def fake_step(name, cmd, timeout_s, log_path, stdout_path=None, **kw):
        cmds[name] = cmd
        return {"step": name, "status": "ok", "seconds": 0.0, "log": log_path.name}

    monkeypatch.setattr(gpu_check, "_step", fake_step)
    assert gpu_check.main([str(tmp_path), "--skip-tests"]) == 0
    names = list(cmds)
    assert names[:3] == ["doctor", "calibrate", "bench-emulator"]
    assert names.index("bench-step") < names.index("bench-prefill") == len(names) - 1
    assert cmds["calibrate"][cmds["calibrate"].index("--device") + 1] == "cuda"
    assert cmds["bench-emulator"][-2:] == ["--emulate", "h100"]  # imposition: h100 was not measured on this GPU
    assert "cuda" in cmds["bench-step"]


BROKEN_AFTER_CALL = '''
import atexit
import os
import signal
import time
import pytest

@pytest.fixture
def hangs_in_teardown():
    yield
    time.sleep(600)

@pytest.fixture
def crashes_in_teardown():
    yield
    os.kill(os.getpid(), signal.SIGSEGV)

@pytest.mark.gpu
def test_a_passes_then_hangs_in_teardown(hangs_in_teardown):
    pass

@pytest.mark.gpu
def test_b_passes_then_crashes_in_teardown(crashes_in_teardown):
    pass

@pytest.mark.gpu
def test_c_passes():
    pass

@pytest.mark.gpu
def test_d_passes_and_the_process_crashes_at_exit():
    atexit.register(lambda: os.kill(os.getpid(), signal.SIGSEGV))
'''


def _no_timeout_plugin(gpu_check):
    def step(name, cmd, *a, **k):
        if cmd[1:3] == ["-m", "pytest"]:
            cmd = [*cmd[:3], "-p", "no:timeout", *cmd[3:]]  # as on the device image
        return gpu_check._step(name, cmd, *a, **k)

    return step


@pytest.mark.timeout(180)
def test_a_test_that_passes_its_call_then_hangs_or_crashes_is_a_failure_and_the_exit_code_is_read(tmp_path):
    """A passed call followed by a hung or crashed teardown, and a crash at exit after every test passed:
    each fails the step (nothing here fails inside a test's call), and the tests after them still run."""
    gpu_check = _load()
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "test_after_call_gpu.py").write_text(BROKEN_AFTER_CALL)
    out = tmp_path / "out"
    out.mkdir()
    res = gpu_check.run_gpu_tests(out, [str(tmp_path / "fake")], 120, 3, sys.executable, gpu_check._env(False),
                                  _no_timeout_plugin(gpu_check))
    short = {k: [n.rsplit("::", 1)[1] for n in res[k]] for k in ("timed_out", "crashed", "hung_or_crashed_after_call")}
    assert short["timed_out"] == ["test_a_passes_then_hangs_in_teardown"]
    assert short["crashed"] == ["test_b_passes_then_crashes_in_teardown"]
    assert short["hung_or_crashed_after_call"] == ["test_a_passes_then_hangs_in_teardown",
                                                   "test_b_passes_then_crashes_in_teardown"]
    assert res["counts"] == {"passed": 4} and res["failed"] == [] and res["not_run"] == []
    assert res["status"] == "failed" and len(res["runs"]) == 3
    assert res["problems"] == ["run 3: pytest killed by signal 11 after every test finished"]


@pytest.mark.timeout(120)
def test_tests_that_never_started_are_listed_as_not_run(tmp_path):
    gpu_check = _load()
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "test_slow_gpu.py").write_text(
        "import time, pytest\n\n@pytest.mark.gpu\ndef test_a_slow():\n    time.sleep(60)\n\n"
        "@pytest.mark.gpu\ndef test_b():\n    pass\n\n@pytest.mark.gpu\ndef test_c():\n    pass\n")
    out = tmp_path / "out"
    out.mkdir()
    # The step's whole budget ends inside the first test (its own limit, 30 s, is never reached).
    res = gpu_check.run_gpu_tests(out, [str(tmp_path / "fake")], 12, 30, sys.executable, gpu_check._env(False),
                                  _no_timeout_plugin(gpu_check))
    assert [n.rsplit("::", 1)[1] for n in res["not_run"]] == ["test_b", "test_c"]
    assert [n.rsplit("::", 1)[1] for n in res["timed_out"]] == ["test_a_slow"]
    assert res["status"] == "failed"
    assert list(res["files"].values()) == [{"hung or crashed": 1, "not run": 2}]


def test_a_step_whose_package_is_missing_is_skipped_with_its_reason(tmp_path, monkeypatch):
    gpu_check = _load()
    monkeypatch.setitem(gpu_check.NEEDS, "bench-timer", ("torch", "no_such_package_cc"))
    ran = []

    def fake_step(name, cmd, timeout_s, log_path, stdout_path=None, **kw):
        ran.append(name)
        return {"step": name, "status": "ok", "seconds": 0.0, "log": log_path.name}

    monkeypatch.setattr(gpu_check, "_step", fake_step)
    assert gpu_check.main([str(tmp_path), "--skip-tests", "--only", "timer,readback"]) == 0
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    timer = next(s for s in summary["steps"] if s["step"] == "bench-timer")
    assert timer["status"].startswith("skipped: needs no_such_package_cc")
    assert "bench-timer" not in ran and "bench-readback" in ran
    assert summary["skipped_steps"] == ["bench-timer"] and summary["ok"] is True


def test_a_benchmark_killed_at_its_cap_leaves_what_it_measured_marked_incomplete(tmp_path):
    """The real ``cc-runtime bench readback`` on the simulated device, killed part-way by its cap."""
    gpu_check = _load()
    json_path = tmp_path / "readback.json"
    cmd = [sys.executable, "-m", "cc_runtime", "bench", "readback", "--quick", "--device", "cpu", "--json",
           str(json_path), "--batch-sizes", "1", "--steps", "5", "--reps", "1000"]
    env = gpu_check._env(True)
    step = gpu_check._step("bench-readback", cmd, 45, tmp_path / "log", env=env)  # ends inside the loop
    record = gpu_check._bench_record(step, json_path)
    doc = json.loads(json_path.read_text())
    assert step["status"] == "timed out after 45s"
    assert doc["complete"] is False and doc["summary"] == {}
    assert record["json_complete"] is False and record["measured_records"] == len(doc["measured"]) > 0
    assert {m["arm"] for m in doc["measured"]} >= {"cc_off", "cc_inline"}
    # progress counts a run as done when the loop moves on; a kill between a run's record and that step
    # leaves one record ahead of it
    assert doc["progress"]["loop"] == "readback" and doc["progress"]["done"] >= len(doc["measured"]) - 1


# -- the rehearsal: the whole check on the simulated device ----------------------------------------------
class _Simulated(dict):
    """``gpu_check.py --simulate`` [--smoke], each run at most once per module, when a test first asks."""

    def __init__(self, factory):
        super().__init__()
        self.factory = factory

    def __missing__(self, mode):
        out = self.factory.mktemp(f"sim-{mode}")
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--simulate", str(out),
                               *(["--smoke"] if mode == "smoke" else [])], capture_output=True, text=True,
                              timeout=1500)
        self[mode] = (proc, out, time.monotonic() - t0)
        return self[mode]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    return _Simulated(tmp_path_factory)


def _promised_files(mode):
    """The files docs/gpu-check.md promises for a mode: its table's rows with `name` | modes."""
    text = (REPO / "docs" / "gpu-check.md").read_text()
    files = []
    for line in text.splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|\s*(smoke and full|full only|smoke only)\s*\|", line)
        if m and (m.group(2) == "smoke and full" or m.group(2).startswith(mode)):
            files.append(m.group(1))
    return files


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", ["smoke", "full"])
def test_simulate_runs_every_step_and_writes_every_promised_file(simulated, mode):
    gpu_check = _load()
    proc, out, _ = simulated[mode]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["complete"] is True and summary["ok"] is True and summary["device"] == "simulated"
    assert summary["mode"] == mode and summary["skipped_steps"] == [] and summary["failed_steps"] == []
    steps = [s["step"] for s in summary["steps"]]
    if mode == "smoke":
        assert steps == [p.name for p in gpu_check.SMOKE_PLAN]
    else:
        assert steps == ["doctor", "gpu-tests", "calibrate", *[f"bench-{b}" for b in gpu_check.BENCHMARKS]]
    assert all(s["status"] == "ok" for s in summary["steps"])
    for s in summary["steps"]:
        if s["step"].startswith("bench-"):
            assert s["json_complete"] is True and isinstance(s["summary"], dict) and s["summary"]
    tests = next(s for s in summary["steps"] if s["step"] == "gpu-tests")
    assert tests["counts"].get("skipped", 0) > 0 and tests["problems"] == [] and tests["not_run"] == []
    if mode == "smoke":
        assert set(tests["files"]) == set(gpu_check.smoke_test_paths())
        assert {"tests/timer/test_timer_gpu.py", "tests/readback/test_readback_worker_gpu.py",
                "tests/staging/test_stager_gpu.py"} <= set(tests["files"])
    promised = _promised_files(mode)
    assert len(promised) >= 8
    assert [f for f in promised if not (out / f).exists()] == []


@pytest.mark.timeout(1200)
def test_smoke_fits_in_three_minutes(simulated):
    """What the rehearsal measured fits the device's caps: each step's CPU seconds (which the shared
    machine's load does not inflate) inside its cap and within 3x the estimate its plan records, the
    caps inside the 150 s budget (30 s of margin in three minutes), every step under its own plan's cap."""
    gpu_check = _load()
    _, out, _ = simulated["smoke"]
    summary = json.loads((out / "gpu_check.json").read_text())
    plan = {p.name: p for p in gpu_check.SMOKE_PLAN}
    assert sum(p.cap_s for p in plan.values()) <= gpu_check.SMOKE_BUDGET_S <= 180 - 30
    assert [s["step"] for s in summary["steps"]] == list(plan)
    scale = summary["cap_scale"]
    for s in summary["steps"]:
        p = plan[s["step"]]
        assert s["cap_s"] == p.cap_s * scale, f"{s['step']} ran under another cap than its plan's"
        assert s["cpu_seconds"] < p.cap_s, f"{s['step']}: {s['cpu_seconds']} CPU s does not fit its {p.cap_s}s cap"
        assert s["cpu_seconds"] <= 3 * p.cpu_s, f"{s['step']}: {s['cpu_seconds']} CPU s, plan says {p.cpu_s}"
        assert p.cpu_s < p.cap_s


def test_the_lease_runs_smoke_then_full_in_the_time_left_and_packs_at_most_eight_files(tmp_path):
    gpu_check = _load()
    import gpu_check_lease

    calls = []

    def fake_main(argv):
        calls.append(argv)
        out = Path(argv[0])
        out.mkdir(parents=True)
        (out / "gpu_check.json").write_text(json.dumps({"complete": True, "mode": argv[1]}))
        (out / "doctor.json").write_text("{}")
        return 0

    assert gpu_check_lease.run_lease(tmp_path / "OUT", 300, True, fake_main) == 0
    assert calls[0][1:] == ["--smoke", "--simulate"]
    assert calls[1][1] == "--budget-s" and 250 <= float(calls[1][2]) <= 300 - gpu_check_lease.PACK_S
    files = sorted(p.name for p in (tmp_path / "OUT").iterdir())
    assert files == ["full_gpu_check.json", "gpu_check_results.tar.gz", "lease.json", "smoke_gpu_check.json"]
    import tarfile

    with tarfile.open(tmp_path / "OUT" / "gpu_check_results.tar.gz") as tar:
        names = tar.getnames()
    assert "gpu_check_results/smoke/doctor.json" in names and "gpu_check_results/full/gpu_check.json" in names
    assert gpu_check.main  # the lease is reached through gpu_check.py --lease
