"""``benchmarks/gpu_check.py`` without a GPU: the per-test limit works without pytest-timeout, a hung
test does not take the rest of the run with it, and the summary is on disk after every step.

Stand-ins, and why: there is no GPU here, so the "GPU tests" are three tiny tests written to a
temporary folder (one passes, one hangs, one after it passes) and run by the real pytest through the
real plugin; pytest-timeout is switched off (``-p no:timeout``) as on the device image.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
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
def test_a_hung_test_is_cut_off_and_the_run_resumes_without_it(tmp_path, monkeypatch):
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

    monkeypatch.setattr(gpu_check, "_step", step_without_pytest_timeout)
    res = gpu_check.run_gpu_tests(out, [str(tests)], budget_s=120, per_test_s=3, py=sys.executable)
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


def test_smoke_fits_in_three_minutes(tmp_path, monkeypatch):
    """--smoke: doctor, the timer's GPU tests, one short readback run, inside a 170 s budget."""
    gpu_check = _load()
    limits: list[tuple[str, float]] = []

    def fake_step(name, cmd, timeout_s, log_path, stdout_path=None, **kw):
        limits.append((name, timeout_s))
        return {"step": name, "status": "ok", "seconds": 0.0, "log": log_path.name}

    def fake_tests(out, paths, budget_s, per_test_s, py):
        limits.append(("gpu-tests", budget_s))
        assert paths == ["tests/timer/test_timer_gpu.py"] and per_test_s <= 45
        return {"step": "gpu-tests", "status": "ok", "seconds": 0.0}

    monkeypatch.setattr(gpu_check, "_step", fake_step)
    monkeypatch.setattr(gpu_check, "run_gpu_tests", fake_tests)
    assert gpu_check.main([str(tmp_path), "--smoke"]) == 0
    assert [n for n, _ in limits] == ["doctor", "gpu-tests", "bench-readback"]
    assert sum(t for _, t in limits) <= 175  # caps, with the deadline clamp on top: under 3 minutes


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
