"""The smoke sweep on a GPU: SGLang's real server with the shipped tiny Llama (random weights), offline.

Needs a CUDA GPU and SGLang (an upstream venv); skipped elsewhere. Emulated CC only (no CC machine is
assumed), so every line it writes says 'emulated'.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.upstream, pytest.mark.timeout(1500)]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_smoke_sweep_with_sglang_and_dummy_weights(tmp_path):
    pytest.importorskip("sglang")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run(
        [sys.executable, "-m", "cc_runtime", "sweep", "--dummy-weights", "--emulate", "h100", "--arms", "cc-off,cc",
         "--isl-osl", "128/32", "--concurrency", "2", "--num-prompts", "8", "--out", str(tmp_path),
         "--health-timeout", "600", "--cell-timeout", "300", "--", "--mem-fraction-static", "0.3",
         "--disable-cuda-graph"],
        capture_output=True, text=True, timeout=1400, env=env, cwd=ROOT)
    logs = "".join(open(os.path.join(d, "server.log")).read()[-3000:] for d in
                   (tmp_path / "cc-off", tmp_path / "cc") if os.path.exists(os.path.join(d, "server.log")))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + logs
    recs = [json.loads(x) for x in open(tmp_path / "results.jsonl")]
    assert [(x["arm"], x["status"], x["cc"]) for x in recs] == [("cc-off", "ok", "off"), ("cc", "ok", "emulated:h100")]
    assert all(x["metrics"]["output_throughput"] > 0 and x["client"]["completed"] == 8 for x in recs)
    assert "EMULATED CC" in (tmp_path / "report.md").read_text()
