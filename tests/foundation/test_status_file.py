"""Per-process status files (CC_RUNTIME_STATUS_DIR) and ``cc-runtime status``: written only where
cc_runtime is active, readable from another process, warnings kept; the setting is validated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cc_runtime import settings

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys
import cc_runtime
from cc_runtime import status_file
status_file.warn("cc_runtime: TEST_SWITCH=0 set by the user disagrees with cc_runtime's 1")
print("LABEL", cc_runtime.cc_state().label)
"""


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    base.update(PYTHONPATH=str(ROOT), CC_RUNTIME_STATUS_DIR=str(tmp_path / "st"), **env)
    return subprocess.run([sys.executable, "-c", CHILD, "--device", "cpu"], env=base, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.timeout(300)
def test_forced_cc_writes_a_status_file_with_patches_and_warnings(tmp_path):
    r = _run(tmp_path, CC_RUNTIME_CC="1")
    assert r.returncode == 0, r.stderr
    # The warning reaches stderr at once (logging is not configured in this child) ...
    assert r.stderr.count("TEST_SWITCH=0 set by the user") == 1, r.stderr
    files = list((tmp_path / "st").glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    # ... and the status file keeps it, with the decision and every patch.
    assert data["cc"]["label"] == "on" and data["role"] == "python -c"
    assert data["device"] == "cpu" and data["device_source"] == "--device on the command line"
    assert any("TEST_SWITCH=0" in w for w in data["warnings"])
    assert {"name", "status", "reason"} <= set(data["patches"][0])
    assert "sglang.cc_env" in {p["name"] for p in data["patches"]}
    text = files[0].read_text()
    assert os.uname().nodename not in text and "--device" not in json.dumps(data["role"])

    st = subprocess.run([sys.executable, "-m", "cc_runtime", "status", "--dir", str(tmp_path / "st")],
                        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert st.returncode == 0, st.stderr
    assert f"pid {data['pid']} (exited) python -c: CC on" in st.stdout
    assert "WARNING cc_runtime: TEST_SWITCH=0" in st.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize("env", [{}, {"CC_RUNTIME_DISABLE": "1", "CC_RUNTIME_CC": "1"}, {"CC_RUNTIME_CC": "0"}])
def test_nothing_written_off_cc(tmp_path, env):
    r = _run(tmp_path, **env)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "st").exists()


@pytest.mark.timeout(300)
def test_status_command_without_files_or_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-m", "cc_runtime", "status"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "CC_RUNTIME_STATUS_DIR" in r.stdout
    r = subprocess.run([sys.executable, "-m", "cc_runtime", "status", "--dir", str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "no status files" in r.stdout


@pytest.mark.parametrize("value", ["relative/dir", "~/x", "/ok\x07"])
def test_status_dir_must_be_an_absolute_printable_path(value):
    with pytest.raises(settings.SettingsError, match="CC_RUNTIME_STATUS_DIR"):
        settings.get("CC_RUNTIME_STATUS_DIR", env={"CC_RUNTIME_STATUS_DIR": value})
    assert settings.get("CC_RUNTIME_STATUS_DIR", env={"CC_RUNTIME_STATUS_DIR": " /a/b/../c "}) == "/a/c"
    assert settings.get("CC_RUNTIME_STATUS_DIR", env={}) is None
