"""The REAL SGLang 0.5.23 server, served on this CPU under every cc_runtime arm (nox ``serve-0.5.23``).

Not a stand-in: real ``python -m sglang.launch_server`` with its scheduler and detokenizer processes,
real HTTP, SGLang's own benchmark client, the shipped tiny Llama with dummy weights, SGLang's CPU engine
(``SGLANG_USE_CPU_ENGINE=1``, torch_native attention). The only stand-in is ``tests/serving/stubs/
sgl_kernel`` (the CPU build of ``sgl_kernel`` is not on PyPI; see that module).

Arms: no cc_runtime at all; ``CC_RUNTIME_DISABLE=1``, ``CC_RUNTIME_CC=1`` and ``CC_RUNTIME_EMULATE=h100``,
each through ``cc-runtime launch --``. For each: healthy within a bound, cc_runtime's status in the
scheduler process read from outside (``cc-runtime status``), greedy ``/generate`` text identical to the
plain arm's, SGLang's benchmark client completes a short run, and no traceback in the server log.
Servers listen on 127.0.0.1 in their own process group and are always killed (also on failure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cc_runtime.sweep.server import ServerProcess, free_port

pytestmark = [pytest.mark.upstream, pytest.mark.serving]

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "cc_runtime" / "sweep" / "models" / "tiny-llama"
STUBS = Path(__file__).resolve().parent / "stubs"
#: Generous: 2 vCPUs shared with other jobs; a healthy start takes 1-3 minutes there.
HEALTH_TIMEOUT_S = float(os.environ.get("CC_RUNTIME_SERVE_HEALTH_TIMEOUT_S", "900"))
PROMPTS = ["The capital of France is", "Once upon a time", "1, 2, 3, 4,", "def fibonacci(n):"]
MAX_NEW_TOKENS = 12
SERVER_ARGS = ["--model-path", str(MODEL), "--load-format", "dummy", "--device", "cpu",
               "--max-total-tokens", "4096", "--random-seed", "1", "--log-level", "info"]

ARMS: dict[str, dict[str, str]] = {
    "plain": {},
    "disabled": {"CC_RUNTIME_DISABLE": "1"},
    "forced": {"CC_RUNTIME_CC": "1"},
    "emulated": {"CC_RUNTIME_EMULATE": "h100"},
}


def _enabled() -> None:
    if os.environ.get("CC_RUNTIME_TEST_SERVE") != "1":
        pytest.skip("serves a real SGLang server: only in the serve-0.5.23 nox session (CC_RUNTIME_TEST_SERVE=1)")


def _base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CC_RUNTIME_", "SGLANG_FORCE_", "FLASHINFER_"))}
    old = env.get("PYTHONPATH")
    env.update(SGLANG_USE_CPU_ENGINE="1", CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(STUBS), str(ROOT)] + ([old] if old else [])),
               TMPDIR=str(tmp))
    return env


def _post(url: str, body: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _status(directory: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    r = subprocess.run([sys.executable, "-m", "cc_runtime", "status", "--dir", str(directory), "--json"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _serve(arm: str, tmp: Path) -> dict[str, Any]:
    env = _base_env(tmp)
    status_dir = tmp / "status"
    env["CC_RUNTIME_STATUS_DIR"] = str(status_dir)  # must stay empty where cc_runtime is off
    env.update(ARMS[arm])
    port = free_port()
    server_cmd = [sys.executable, "-m", "sglang.launch_server", "--host", "127.0.0.1", "--port", str(port),
                  *SERVER_ARGS]
    if arm == "plain":
        env["SGLANG_PLUGINS"] = "none"  # an allowlist naming no plugin: SGLang skips cc_runtime's entry point
        argv = server_cmd
    else:
        argv = [sys.executable, "-m", "cc_runtime", "launch", "--", *server_cmd]
    log = tmp / "server.log"
    out: dict[str, Any] = {"arm": arm, "log": log}
    server = ServerProcess(argv, env, port, str(log))
    try:
        server.start()
        out["ready_s"] = server.wait_ready(HEALTH_TIMEOUT_S)
        url = f"{server.base_url}/generate"
        out["texts"] = [_post(url, {"text": p, "sampling_params": {"temperature": 0, "max_new_tokens": MAX_NEW_TOKENS}})
                        ["text"] for p in PROMPTS]
        bench_out = tmp / "bench.jsonl"
        bench = subprocess.run(
            [sys.executable, "-m", "sglang.benchmark.serving", "--backend", "sglang", "--host", "127.0.0.1",
             "--port", str(port), "--model", str(MODEL), "--tokenizer", str(MODEL), "--dataset-name", "random-ids",
             "--random-input-len", "32", "--random-output-len", "8", "--random-range-ratio", "1",
             "--num-prompts", "8", "--max-concurrency", "2", "--request-rate", "inf", "--warmup-requests", "1",
             "--seed", "1", "--output-file", str(bench_out)],
            env=env, capture_output=True, text=True, timeout=600)
        out["bench_rc"], out["bench_log"] = bench.returncode, (bench.stdout + bench.stderr)[-4000:]
        lines = bench_out.read_text().splitlines() if bench_out.exists() else []
        out["bench"] = json.loads(lines[-1]) if lines else None
        out["status"] = _status(status_dir, env)  # while the server runs: its processes are alive
    except Exception as exc:  # noqa: BLE001 - reported by the tests of this arm, with the server log
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()
    out["group_gone"] = _group_gone(server)
    out["log_text"] = log.read_text(errors="replace")
    return out


def _group_gone(server: ServerProcess) -> bool:
    try:
        os.killpg(server.pgid or 0, 0)
    except ProcessLookupError:
        return True
    return False


#: A subset of arms for a quicker local run (the plain arm always runs: it is the reference).
SELECTED = ["plain", *(a for a in os.environ.get("CC_RUNTIME_SERVE_ARMS", ",".join(ARMS)).split(",")
                       if a in ARMS and a != "plain")]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, dict[str, Any]]:
    _enabled()
    return {arm: _serve(arm, tmp_path_factory.mktemp(f"serve-{arm}")) for arm in SELECTED}


@pytest.fixture
def arm_served(served, arm) -> dict[str, Any]:
    if arm not in served:
        pytest.skip(f"arm {arm} not in CC_RUNTIME_SERVE_ARMS")
    return served[arm]


def _scheduler(status: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [p for p in status if "run_scheduler_process" in str(p.get("role"))]
    assert len(rows) == 1, [(p.get("pid"), p.get("role")) for p in status]
    return rows[0]


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("arm", list(ARMS))
def test_arm_serves_like_plain_sglang(served, arm_served, arm):
    res, plain = arm_served, served["plain"]
    log = res["log_text"]
    assert "error" not in res, f"{arm}: {res['error']}; server log {res['log']}:\n{log[-6000:]}"
    assert "error" not in plain, f"plain: {plain['error']}"
    assert "Traceback" not in log, f"{arm}: traceback in {res['log']}:\n{log[-6000:]}"
    assert res["group_gone"], f"{arm}: server processes outlived stop()"
    assert res["texts"] == plain["texts"], f"{arm}: greedy outputs differ from plain SGLang's"
    assert all(t.strip() for t in res["texts"]), res["texts"]
    assert res["bench_rc"] == 0 and res["bench"] is not None, res["bench_log"]
    assert res["bench"]["completed"] == 8, res["bench"]


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("arm", ["plain", "disabled"])
def test_no_status_where_cc_runtime_is_off(arm_served, arm):
    assert "error" not in arm_served, arm_served["error"]
    assert arm_served["status"] == [], arm_served["status"]


@pytest.mark.timeout(3600)
@pytest.mark.parametrize(("arm", "label"), [("forced", "on"), ("emulated", "emulated:h100")])
def test_scheduler_status_readable_from_outside(arm_served, arm, label):
    assert "error" not in arm_served, arm_served["error"]
    status = arm_served["status"]
    sched = _scheduler(status)
    assert sched["alive"] and sched["cc"]["label"] == label, sched
    assert sched["device"] == "cpu", sched
    rows = {r["name"]: r for r in sched["patches"]}
    # SGLang's CC switch and every CUDA-only patch stay off on a CPU device: the server is plain SGLang.
    assert (rows["sglang.cc_env"]["status"], rows["sglang.cc_env"]["reason"]) == ("not applicable", "device cpu")
    applied = [n for n, r in rows.items() if r["status"] == "applied" and (n.startswith("sglang.") or n == "emulation")]
    assert applied == [], applied
    if arm == "emulated":
        assert (rows["emulation"]["status"], rows["emulation"]["reason"]) == ("not applicable", "device cpu")
    assert "SGLANG_FORCE_CONFIDENTIAL_COMPUTE" not in str(sched["warnings"])
    assert any(p["pid"] != sched["pid"] for p in status), "the launching process's status is missing"
