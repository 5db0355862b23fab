from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env_extra: dict | None = None, pythonpath: list[str] | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join([*(pythonpath or []), str(REPO)])
    return subprocess.run([sys.executable, "-m", "cc_runtime", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.timeout(150)
def test_doctor_json_has_the_documented_shape():
    r = cli("doctor", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert {"cc", "versions", "patches"} <= rep.keys()
    assert {"enabled", "source", "reason"} <= rep["cc"].keys()
    assert rep["cc"]["enabled"] is False  # no GPU here
    for key in ("python", "torch", "triton", "flashinfer-python", "sglang", "cuda-python", "nvidia-ml-py"):
        assert key in rep["versions"]
    names = [p["name"] for p in rep["patches"]]
    assert "sglang.cc_env" in names
    for p in rep["patches"]:
        assert {"name", "target", "status", "reason", "upstream"} <= p.keys()


def test_status_api_matches_doctor_keys():
    import cc_runtime

    rep = cc_runtime.status()
    assert {"cc", "versions", "patches"} <= rep.keys()


@pytest.mark.timeout(150)
def test_forced_cc_shows_in_doctor_and_patches():
    r = cli("patches", "--json", env_extra={"CC_RUNTIME_CC": "1"})
    assert r.returncode == 0, r.stderr
    statuses = {p["name"]: p["status"] for p in json.loads(r.stdout)}
    # Forced on, the patch is considered: applied where SGLang is installed, else not applicable.
    assert statuses["sglang.cc_env"] in ("not applicable", "applied")
    off = cli("patches", "--json")
    assert {p["name"]: p["status"] for p in json.loads(off.stdout)}["sglang.cc_env"] == "disabled"


@pytest.mark.timeout(150)
def test_invalid_setting_exits_2_naming_the_variable():
    r = cli("doctor", env_extra={"CC_RUNTIME_STRICT": "yes"})
    assert r.returncode == 2
    assert "CC_RUNTIME_STRICT='yes' is not valid; allowed: 0|1" in r.stderr


@pytest.mark.timeout(150)
def test_doctor_prints_even_with_torch_and_nvml_broken(tmp_path):
    for name in ("torch", "pynvml"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise RuntimeError('{name} is broken')\n")
    r = cli("doctor", pythonpath=[str(tmp_path)])
    assert r.returncode == 0, r.stderr
    assert "torch broken: RuntimeError: torch is broken" in r.stdout
    assert "pynvml is broken" in r.stdout or "not installed" in r.stdout


@pytest.mark.timeout(150)
def test_launch_runs_the_command_with_cc_runtime_in_the_child():
    code = "import sys; print('ACTIVE', 'cc_runtime' in sys.modules)"
    r = cli("launch", "--", sys.executable, "-c", code, env_extra={"CC_RUNTIME_CC": "1"})
    assert r.returncode == 0, r.stderr
    assert "ACTIVE True" in r.stdout


def test_launch_without_a_command_is_a_usage_error():
    r = cli("launch")
    assert r.returncode == 2 and "give a command" in r.stderr


def test_launch_propagates_the_exit_code():
    r = cli("launch", "--", sys.executable, "-c", "raise SystemExit(7)")
    assert r.returncode == 7
