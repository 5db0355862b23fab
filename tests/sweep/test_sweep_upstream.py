"""``cc-runtime sweep`` end to end with SGLang's real benchmark client against the loopback test server.

The client is the real one of the nox upstream venv (``sglang.benchmark.serving`` in 0.5.23,
``sglang.bench_serving`` in 0.5.12), run by the sweep exactly as on a GPU machine. The server is
cc_runtime's loopback test server: a stand-in, because SGLang's own server needs libcuda. It speaks the
endpoints the client uses, with latencies, failures and crashes set by its flags. Loopback only; every
wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.upstream, pytest.mark.timeout(900)]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def client_ok():
    if not os.environ.get("CC_RUNTIME_TEST_SGLANG"):
        pytest.skip("not in an upstream-* nox session")
    from cc_runtime.sweep.client import detect_client

    info = detect_client(sys.executable)
    if info.note:
        pytest.skip(info.note)
    r = subprocess.run([sys.executable, "-c", f"import {info.module}"], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    if r.returncode != 0:
        pytest.skip(f"{info.module} does not import here: {r.stderr.strip().splitlines()[-1]}")
    return info


def sweep(out, *args, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    env.update(PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""), CUDA_VISIBLE_DEVICES="",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    argv = [sys.executable, "-m", "cc_runtime", "sweep", "--test-server", "--dummy-weights", "--out", str(out),
            "--health-timeout", "60", "--cell-timeout", "240", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def records(out):
    with open(os.path.join(out, "results.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


GRID = ["--isl-osl", "32/8", "--concurrency", "1,3", "--num-prompts", "6", "--warmup-requests", "1"]


@pytest.fixture(scope="module")
def whole_grid(client_ok, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    r = sweep(out, "--emulate", "h100", *GRID, "--", "--tp", "2", "--tpot-ms", "2", "--tpot-ms-per-running", "4")
    return out, r


def test_whole_grid_all_arms(whole_grid):
    out, r = whole_grid
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    recs = records(out)
    assert [(x["arm"], x["concurrency"], x["status"]) for x in recs] == [
        (arm, c, "ok") for arm in ("cc-off", "cc", "cc+cc_runtime") for c in (1, 3)]
    for x in recs:
        client = x["client"]  # the real client's own JSON line
        assert client["completed"] == 6 and client["random_input_len"] == 32 and client["max_concurrency"] == x[
            "concurrency"]
        assert x["metrics"]["output_throughput_per_gpu"] == pytest.approx(client["output_throughput"] / 2)
        assert x["results_from"] == "test-server" and x["gpus_used"] == 2
        assert x["emulated"] == (x["arm"] != "cc-off")
    assert "[cc (emulated:h100, TEST SERVER)] ISL/OSL 32/8 concurrency 3: ok" in r.stdout
    by = {(x["arm"], x["concurrency"]): x for x in recs}
    # What the test server's batch slowdown does, the client measured (2 ms alone, +4 ms per other request).
    assert by[("cc-off", 3)]["metrics"]["median_tpot_ms"] > by[("cc-off", 1)]["metrics"]["median_tpot_ms"] + 3
    # Each arm's server saw that arm's settings, through `cc-runtime launch`'s bootstrap environment.
    seen = {x["arm"]: x["client"]["server_info"]["cc_runtime_settings"] for x in recs}
    assert seen["cc-off"]["disable"] is True and seen["cc-off"]["emulate"] is None
    assert seen["cc"] == {"disable": False, "emulate": "h100", "bootstrap": True,
                          "patches": "emulation,flashinfer.cc_env,sglang.cc_env"}
    assert seen["cc+cc_runtime"]["patches"] == "*" and seen["cc+cc_runtime"]["emulate"] == "h100"
    # No orphans: every server the sweep started is gone.
    pids = {x["client"]["server_info"]["pid"] for x in recs}
    assert len(pids) == 3 and all(gone(p) for p in pids)


def test_table_and_plots_from_real_client_output(whole_grid):
    out, _ = whole_grid
    md = open(os.path.join(out, "report.md")).read()
    assert "TEST SERVER RESULTS" in md and "EMULATED CC" in md
    recs = {(x["arm"], x["concurrency"]): x for x in records(out)}
    tput = recs[("cc-off", 3)]["metrics"]["output_throughput_per_gpu"]
    row = next(ln for ln in md.splitlines() if ln.startswith("| 3 |"))
    assert f"{tput:,.1f}" in row
    pytest.importorskip("matplotlib")
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert pngs == ["interactivity_isl32_osl8.png", "latency_isl32_osl8.png", "throughput_isl32_osl8.png"]


def test_rerun_resumes(whole_grid):
    out, _ = whole_grid
    before = len(records(out))
    r = sweep(out, "--arms", "cc-off", "--emulate", "h100", "--isl-osl", "32/8", "--concurrency", "1,3,2",
              "--num-prompts", "6", "--warmup-requests", "1", "--",
              "--tp", "2", "--tpot-ms", "2", "--tpot-ms-per-running", "4")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    new = records(out)[before:]
    assert [(x["arm"], x["concurrency"], x["status"]) for x in new] == [("cc-off", 2, "ok")]


def test_crash_mid_sweep_restarts_once_then_fails_the_arm_and_resume_finishes(client_ok, tmp_path):
    # Each cell is 1 warmup + 4 requests; every server incarnation dies in its 8th request.
    args = ["--arms", "cc-off", "--isl-osl", "32/8", "--concurrency", "1,2,3", "--num-prompts", "4",
            "--warmup-requests", "1", "--", "--crash-after-requests", "8"]
    r = sweep(tmp_path, *args)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    recs = records(tmp_path)
    final = {x["concurrency"]: x for x in recs}
    assert final[1]["status"] == "ok" and final[1]["server_start"] == 1
    assert final[2]["status"] == "ok" and final[2]["attempt"] == 2 and final[2]["server_start"] == 2
    assert final[3]["status"] == "failed" and final[3]["reason"].startswith("arm failed: server exited with code 3")
    assert "restarting it once" in r.stdout and "ARM FAILED" in r.stdout
    assert "Cells without a result" in open(tmp_path / "report.md").read()
    # A rerun keeps the finished cells and retries only the failed one (a fresh server gets that far).
    r = sweep(tmp_path, *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    new = records(tmp_path)[len(recs):]
    assert [(x["concurrency"], x["status"]) for x in new] == [(3, "ok")]


def test_failed_requests_fail_the_cell_not_the_server(client_ok, tmp_path):
    r = sweep(tmp_path, "--arms", "cc-off", "--isl-osl", "32/8", "--concurrency", "2", "--num-prompts", "9",
              "--warmup-requests", "1", "--", "--fail-every", "4")
    assert r.returncode == 1
    (x,) = records(tmp_path)
    assert x["status"] == "failed" and x["reason"] == "2 of 9 requests failed" and x["server_start"] == 1
    assert x["client"]["completed"] == 7  # the client's own count, kept with the failure
