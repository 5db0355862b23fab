"""A user-set upstream switch that disagrees with cc_runtime (SGLANG_FORCE_CONFIDENTIAL_COMPUTE=0 under
forced CC) is not lost before SGLang configures logging: stderr at once, and the process's status file.
Real SGLang import (the switch's patch applies on `import sglang`); and on `--device cpu` SGLang's CC
switch is not touched at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.upstream

CODE = "import cc_runtime, sglang, os; print('FORCE', os.environ.get('SGLANG_FORCE_CONFIDENTIAL_COMPUTE'))"


def _run(tmp_path, *args: str, **extra: str) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CC_RUNTIME_", "SGLANG_FORCE", "FLASHINFER_"))}
    env.pop("SGLANG_USE_CPU_ENGINE", None)
    env.update(CC_RUNTIME_CC="1", CC_RUNTIME_STATUS_DIR=str(tmp_path), **extra)
    r = subprocess.run([sys.executable, "-c", CODE, *args], env=env, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    return r, [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]


@pytest.mark.timeout(600)
def test_disagreeing_user_switch_reaches_stderr_and_status_file(tmp_path, sglang_version):
    if sglang_version != "0.5.23":
        pytest.skip("SGLANG_FORCE_CONFIDENTIAL_COMPUTE first shipped in SGLang 0.5.23")
    r, files = _run(tmp_path, SGLANG_FORCE_CONFIDENTIAL_COMPUTE="0")
    assert "FORCE 0" in r.stdout  # the user's value is kept
    line = "SGLANG_FORCE_CONFIDENTIAL_COMPUTE=0 set by the user disagrees with cc_runtime's 1"
    assert r.stderr.count(line) == 1, r.stderr[-3000:]
    (data,) = files
    assert any(line in w for w in data["warnings"])
    assert {p["name"]: p["status"] for p in data["patches"]}["sglang.cc_env"] == "applied"


@pytest.mark.timeout(600)
def test_cpu_device_leaves_sglangs_cc_switch_unset(tmp_path, sglang_version):
    if sglang_version != "0.5.23":
        pytest.skip("SGLANG_FORCE_CONFIDENTIAL_COMPUTE first shipped in SGLang 0.5.23")
    r, files = _run(tmp_path, "--device", "cpu")
    assert "FORCE None" in r.stdout
    (data,) = files
    row = {p["name"]: p for p in data["patches"]}["sglang.cc_env"]
    assert (row["status"], row["reason"]) == ("not applicable", "device cpu")
    assert data["warnings"] == []
