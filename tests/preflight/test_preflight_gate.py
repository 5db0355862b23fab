"""The automatic preflight: where it runs, what `warn` and `require` do, what is left behind.

No GPU or NVML library here, so under forced CC every host check is `unknown`: exactly the case where
`require` must refuse ("no GPU can prove anything here")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import cc_runtime
from cc_runtime import preflight, runtime
from cc_runtime.cli import launch_env
from cc_runtime.cli import main as cli_main

EXPORTS = ("CC_RUNTIME_BOOTSTRAP", "CC_RUNTIME_DECISION", "SGLANG_FORCE_CONFIDENTIAL_COMPUTE",
           "FLASHINFER_CONFIDENTIAL_COMPUTE")


def _clean(monkeypatch) -> None:
    for k in list(os.environ):
        if k.startswith("CC_RUNTIME_") or k in EXPORTS:
            monkeypatch.delenv(k)
    runtime._reset_for_tests()  # the CC state cached when the test module imported cc_runtime


def test_require_refuses_rolls_back_and_leaves_nothing_exported(monkeypatch) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("CC_RUNTIME_CC", "1")
    monkeypatch.setenv("CC_RUNTIME_PREFLIGHT", "require")
    with pytest.raises(preflight.PreflightRefused) as err:
        runtime.auto_activate()
    assert "\n" not in str(err.value) and "cc_mode" in str(err.value) and "unknown" in str(err.value)
    assert not [k for k in EXPORTS if k in os.environ]
    assert runtime.describe()["failure"] == str(err.value)
    assert all(p["status"] != "applied" for p in cc_runtime.status()["patches"])
    assert cc_runtime.status()["preflight"]["where"] == "startup"


def test_warn_prints_one_warning_per_failed_check_and_carries_on(monkeypatch, capsys, caplog) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("CC_RUNTIME_CC", "1")
    monkeypatch.setenv("CC_RUNTIME_PREFLIGHT", "warn")
    from cc_runtime.preflight import host

    def failing(state, pynvml=None):
        return [preflight.Check("devtools", "fail", "DevTools mode is on"),
                preflight.Check("gpus_ready", "unknown", "not reported")]

    monkeypatch.setattr(host, "checks", failing)
    runtime.auto_activate()
    runtime.auto_activate()  # once per process
    # One line: on stderr without logging configured, through logging where it is (pytest's capture is)
    seen = [ln.removeprefix("WARNING ") for ln in capsys.readouterr().err.splitlines()]
    seen += [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert seen == ["cc_runtime preflight: devtools failed: DevTools mode is on"]
    assert os.environ.get("CC_RUNTIME_BOOTSTRAP") == "1"  # activation stands


@pytest.mark.parametrize("setting", ["off", "auto"])
def test_off_and_auto_under_forced_cc_run_nothing(monkeypatch, setting) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("CC_RUNTIME_CC", "1")
    monkeypatch.setenv("CC_RUNTIME_PREFLIGHT", setting)
    runtime.auto_activate()
    assert preflight.last() is None


def test_off_cc_runs_nothing_even_under_require(monkeypatch) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("CC_RUNTIME_CC", "0")
    monkeypatch.setenv("CC_RUNTIME_PREFLIGHT", "require")
    runtime.auto_activate()
    assert preflight.last() is None and cc_runtime.cc_state().enabled is False


def test_the_setting_is_validated_everywhere(monkeypatch, capsys) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("CC_RUNTIME_PREFLIGHT", "sometimes")
    assert cli_main(["doctor"]) == 2
    assert "CC_RUNTIME_PREFLIGHT='sometimes' is not valid" in capsys.readouterr().err
    with pytest.raises(cc_runtime.SettingsError):
        cc_runtime.activate()


def test_cli_preflight_json_off_cc_exits_0(monkeypatch, capsys) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("CC_RUNTIME_CC", "0")
    assert cli_main(["preflight", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cc"]["label"] == "off"
    assert [c["name"] for c in out["checks"]] == ["cc_mode", "devtools", "gpus_ready", "driver", "detectors",
                                                   "attestation"]
    assert {c["result"] for c in out["checks"]} == {"not applicable"}
    assert all(set(c) >= {"name", "result", "reason"} for c in out["checks"])


def _child(env_extra: dict, argv: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_") and k not in EXPORTS}
    env.update(env_extra)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(150)
def test_cli_require_under_forced_cc_exits_non_zero_with_one_line() -> None:
    r = _child({"CC_RUNTIME_CC": "1", "CC_RUNTIME_PREFLIGHT": "require"},
               [sys.executable, "-m", "cc_runtime", "preflight"])
    assert r.returncode == 1, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "refused" in r.stderr and r.stdout == ""


@pytest.mark.timeout(150)
def test_require_at_process_start_up_through_the_bootstrap_exits_1_with_one_line() -> None:
    env = launch_env({k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")})
    env.update(CC_RUNTIME_CC="1", CC_RUNTIME_PREFLIGHT="require")
    r = subprocess.run([sys.executable, "-c", "print('USER CODE RAN')"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "USER CODE RAN" not in r.stdout
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "preflight" in r.stderr, r.stderr


@pytest.mark.timeout(150)
def test_launch_preflight_require_does_not_start_the_command() -> None:
    r = _child({"CC_RUNTIME_CC": "1"}, [sys.executable, "-m", "cc_runtime", "launch", "--preflight", "require",
                                        "--", sys.executable, "-c", "print('STARTED')"])
    assert r.returncode == 1 and "STARTED" not in r.stdout
    assert r.stderr.startswith("cc-runtime launch: not started:") and len(r.stderr.strip().splitlines()) == 1
    ok = _child({"CC_RUNTIME_CC": "0"}, [sys.executable, "-m", "cc_runtime", "launch", "--preflight", "require",
                                         "--", sys.executable, "-c", "print('STARTED')"])
    assert ok.returncode == 0 and "STARTED" in ok.stdout


@pytest.mark.timeout(150)
def test_require_ends_a_user_program_that_imports_cc_runtime_with_one_line() -> None:
    r = _child({"CC_RUNTIME_CC": "1", "CC_RUNTIME_PREFLIGHT": "require", "PYTHONPATH": os.getcwd()},
               [sys.executable, "-c", "import cc_runtime\nprint('USER CODE RAN')"])
    assert r.returncode == 1 and "USER CODE RAN" not in r.stdout
    assert len(r.stderr.strip().splitlines()) == 1 and "refused" in r.stderr, r.stderr


def test_the_status_file_carries_the_preflight_even_when_it_refused(monkeypatch, tmp_path) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("CC_RUNTIME_CC", "1")
    monkeypatch.setenv("CC_RUNTIME_PREFLIGHT", "require")
    monkeypatch.setenv("CC_RUNTIME_STATUS_DIR", str(tmp_path))
    with pytest.raises(preflight.PreflightRefused):
        runtime.auto_activate()
    data = json.loads((tmp_path / f"{os.getpid()}.json").read_text())
    assert data["preflight"]["ok"] is False and data["preflight"]["mode"] == "require"
    assert {c["result"] for c in data["preflight"]["checks"] if c["name"] == "cc_mode"} == {"unknown"}
