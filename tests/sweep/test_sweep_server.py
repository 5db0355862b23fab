"""Server lifecycle: health, fail-fast, log tail, and no orphans, with the loopback test server.

The test server (cc_runtime.sweep.testserver) is a stand-in for SGLang's GPU server, which cannot run
on a CPU-only machine; it is stdlib-only, so these tests run in the plain tests venv. Everything binds
to 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request

import pytest

from cc_runtime.sweep.server import ServerError, ServerProcess, free_port

pytestmark = pytest.mark.timeout(120)


def _test_server(tmp_path, *extra, name="server.log"):
    port = free_port()
    argv = [sys.executable, "-m", "cc_runtime.sweep.testserver", "--host", "127.0.0.1", "--port", str(port),
            "--model-path", "m", *extra]
    env = {**os.environ, "CC_RUNTIME_DISABLE": "1"}
    return ServerProcess(argv, env, port, str(tmp_path / name))


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_healthy_server_answers_what_the_client_uses_and_leaves_no_group(tmp_path):
    srv = _test_server(tmp_path, "--tp", "4", "--load-format", "dummy")
    with srv:
        assert srv.wait_ready(30, poll_s=0.1) < 30
        assert _get(srv.base_url + "/v1/models")["data"][0]["id"] == "m"
        info = _get(srv.base_url + "/server_info")
        assert info["test_server"] is True and "stand-in" in info["note"]
        assert info["ignored_args"] == ["--tp", "4", "--load-format", "dummy"]
        assert info["cc_runtime_settings"]["disable"] is True
        req = urllib.request.Request(srv.base_url + "/generate", method="POST", data=json.dumps(
            {"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 3}, "stream": True}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            events = [ln for ln in r.read().decode().split("\n\n") if ln.startswith("data: ")]
        chunks = [json.loads(e[6:]) for e in events if e != "data: [DONE]"]
        assert [c["meta_info"]["completion_tokens"] for c in chunks] == [1, 2, 3]
        assert chunks[-1]["meta_info"]["prompt_tokens"] == 3 and events[-1] == "data: [DONE]"
        assert chunks[-1]["text"].startswith(chunks[0]["text"])  # cumulative text, as SGLang streams it
        pgid = srv.pgid
    assert pgid is not None and _gone(pgid)


def test_stop_kills_grandchildren_too(tmp_path):
    """A launcher that forks workers (as SGLang's does): stopping must take the whole group down."""
    pidfile = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
            f"open({str(pidfile)!r}, 'w').write(str(c.pid)); time.sleep(300)")
    srv = ServerProcess([sys.executable, "-c", code], dict(os.environ), free_port(), str(tmp_path / "l.log"))
    srv.start()
    deadline = time.monotonic() + 30
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(pidfile.read_text())
    srv.stop(grace_s=5)
    assert _gone(srv.pgid)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_stop_escalates_to_sigkill(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(300)"
    srv = ServerProcess([sys.executable, "-c", code], dict(os.environ), free_port(), str(tmp_path / "l.log"))
    srv.start()
    deadline = time.monotonic() + 30
    while "up" not in (tmp_path / "l.log").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    srv.stop(grace_s=0.5)
    assert _gone(srv.pgid) and time.monotonic() - t0 < 15
    assert srv.proc is not None and srv.proc.returncode == -signal.SIGKILL


def test_never_healthy_times_out_with_the_log_tail(tmp_path):
    srv = _test_server(tmp_path, "--never-healthy")
    t0 = time.monotonic()
    with srv, pytest.raises(ServerError) as err:
        srv.wait_ready(2.0, poll_s=0.2)
    assert 2.0 <= time.monotonic() - t0 < 20
    assert "not healthy after 2 s" in str(err.value) and "TEST SERVER" in str(err.value)  # the log's tail
    assert _gone(srv.pgid)


def test_a_server_that_dies_fails_fast(tmp_path):
    srv = _test_server(tmp_path, "--exit-at-start", "7")
    t0 = time.monotonic()
    with srv, pytest.raises(ServerError, match="exited with code 7"):
        srv.wait_ready(60, poll_s=0.1)
    assert time.monotonic() - t0 < 30  # not the 60 s health timeout


def test_a_missing_executable_is_a_server_error(tmp_path):
    srv = ServerProcess(["/nonexistent/python"], {}, free_port(), str(tmp_path / "l.log"))
    with pytest.raises(ServerError, match="could not start"):
        srv.start()
    srv.stop()  # nothing started: a no-op


def test_sweep_marks_an_arm_failed_when_its_server_never_becomes_healthy(tmp_path, monkeypatch):
    """Two starts (the first and one restart), each ending at the health timeout; every cell of the arm
    gets a failed line with the reason; the progress bar named each arm and cell. No client runs."""
    import io

    from cc_runtime.sweep import runner
    from cc_runtime.sweep.arms import plan_arms
    from cc_runtime.sweep.client import ClientInfo
    from cc_runtime.sweep.grid import build_grid

    class Bar:
        def __init__(self):
            self.descriptions, self.done = [], 0

        def update(self, n=1):
            self.done += n

        def set_description(self, d):
            self.descriptions.append(d)

        def close(self):
            pass

    bar = Bar()
    monkeypatch.setattr(runner, "_progress_bar", lambda total: bar)
    cfg = runner.SweepConfig(
        out_dir=str(tmp_path), cells=build_grid([(32, 8)], [1, 2]),
        arms=plan_arms(["cc-off", "cc"], emulate=None, real_cc=False),
        server_args=["--model-path", "m", "--never-healthy"], client=ClientInfo("sglang.benchmark.serving", None),
        test_server=True, health_timeout_s=1.5)
    out = io.StringIO()
    t0 = time.monotonic()
    failed = runner.Sweep(cfg, out=out).run()
    assert time.monotonic() - t0 < 60
    assert failed == 2
    recs = [json.loads(line) for line in open(tmp_path / "results.jsonl")]
    assert [(r["arm"], r["concurrency"], r["status"]) for r in recs] == [
        ("cc-off", 1, "failed"), ("cc-off", 2, "failed"), ("cc", 1, "skipped"), ("cc", 2, "skipped")]
    assert recs[0]["reason"].startswith("arm failed: server start 2: server not healthy after 2 s")
    assert "TEST SERVER" in recs[0]["reason"]  # the server log's tail travels with the failure
    assert recs[1]["reason"] == recs[0]["reason"]
    assert "--emulate" in recs[2]["reason"]
    log = (tmp_path / "cc-off" / "server.log").read_text()
    assert log.count("=== cc-runtime sweep") == 2  # started exactly twice
    assert bar.descriptions[:2] == ["cc-off | isl32_osl8_c1", "cc-off | isl32_osl8_c2"] and bar.done == 4
    assert "[cc-off (TEST SERVER)] ISL/OSL 32/8 concurrency 1: ARM FAILED after 2 server start(s)" in out.getvalue()
    assert not os.path.exists(tmp_path / "cc-off" / "isl32_osl8_c1" / "client.log")  # no client was run


def test_terminating_the_sweep_stops_its_server(tmp_path):
    """SIGTERM to `cc-runtime sweep` while it waits for a server: the server's group must not survive it."""
    import re
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    sweep = subprocess.Popen([sys.executable, "-m", "cc_runtime", "sweep", "--test-server", "--arms", "cc-off",
                              "--quick", "--health-timeout", "90", "--out", str(tmp_path), "--",
                              "--model-path", "m", "--never-healthy"], env=env, cwd=root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = tmp_path / "cc-off" / "server.log"
    deadline = time.monotonic() + 60
    pid = None
    while pid is None:
        assert time.monotonic() < deadline and sweep.poll() is None, "the test server never started"
        m = re.search(r"TEST SERVER.*pid (\d+)", log.read_text()) if log.exists() else None
        pid = int(m.group(1)) if m else None
        time.sleep(0.1)
    sweep.terminate()
    out, err = sweep.communicate(timeout=60)
    try:
        assert sweep.returncode == 130, err.decode()[-2000:]
        assert b"finished cells are kept" in err
        assert _gone(pid)
    finally:
        if not _gone(pid):  # a failed run must not leave its server behind either
            os.killpg(pid, signal.SIGKILL)
