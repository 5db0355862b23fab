"""Every branch of the host checks, the report and the refusal line, with the fake NVML (fake_nvml.py: no
NVIDIA driver can exist on a CPU machine)."""

from __future__ import annotations

import preflight_fake_nvml as fake_nvml
import pytest

from cc_runtime import detect, preflight
from cc_runtime.preflight import host

FORCED = detect.CCState(True, "env", "forced on by CC_RUNTIME_CC=1", mode="forced")
EMULATED = detect.CCState(True, "emulated", "CC_RUNTIME_EMULATE=h100", mode="emulated", profile="h100")
OFF = detect.CCState(False, "none", "NVML unavailable")


def results(state, nv) -> dict[str, tuple[str, str]]:
    return {c.name: (c.result, c.reason) for c in host.checks(state, nv)}


def real(nv):
    return detect.probe_nvml(nv)


def test_a_protected_machine_passes_every_host_check() -> None:
    nv = fake_nvml.make(gpus=["cc", "cc"])
    got = results(real(nv), nv)
    assert {k: v[0] for k, v in got.items()} == dict.fromkeys(host.NAMES, "pass")
    assert "2 GPU(s)" in got["cc_mode"][1]


def test_devtools_mode_fails() -> None:
    nv = fake_nvml.make(devtools=1)
    got = results(real(nv), nv)
    assert got["devtools"][0] == "fail" and "nothing is protected" in got["devtools"][1]
    assert got["cc_mode"][0] == "pass"


def test_ready_state_not_set_fails_and_unreadable_is_unknown() -> None:
    nv = fake_nvml.make(ready=0)
    assert results(real(nv), nv)["gpus_ready"][0] == "fail"
    nv = fake_nvml.make(ready=fake_nvml.NVMLError("Not Supported"))
    assert results(real(nv), nv)["gpus_ready"][0] == "unknown"


def test_a_mix_of_cc_and_non_cc_gpus_fails() -> None:
    nv = fake_nvml.make(gpus=["cc", "off", "cc"])
    result, reason = results(real(nv), nv)["cc_mode"]
    assert result == "fail" and "[1]" in reason and "of 3" in reason


def test_per_gpu_state_unreadable_keeps_the_system_answer_and_says_so() -> None:
    nv = fake_nvml.make(gpus=["cc", "error"])
    result, reason = results(real(nv), nv)["cc_mode"]
    assert result == "pass" and "not readable for GPU(s) [1]" in reason
    nv = fake_nvml.make(per_device_call=False)
    assert results(real(nv), nv)["cc_mode"][0] == "pass"


def test_old_driver_fails_unreadable_driver_is_unknown() -> None:
    nv = fake_nvml.make(driver="530.30.02")
    result, reason = results(real(nv), nv)["driver"]
    assert result == "fail" and "R535" in reason
    nv = fake_nvml.make(driver="535.54.03")
    assert results(real(nv), nv)["driver"][0] == "pass"
    nv = fake_nvml.make(driver=fake_nvml.NVMLError("Unknown Error"))
    assert results(real(nv), nv)["driver"][0] == "unknown"


def test_forced_cc_on_a_machine_nvml_calls_non_cc_fails() -> None:
    nv = fake_nvml.make(cc_feature=0)
    result, reason = results(FORCED, nv)["cc_mode"]
    assert result == "fail" and "nothing is protected" in reason


def test_nvml_errors_make_every_host_check_unknown() -> None:
    nv = fake_nvml.make(init_error=fake_nvml.NVMLError("Driver Not Loaded"))
    got = results(FORCED, nv)
    assert {v[0] for v in got.values()} == {"unknown"} and "Driver Not Loaded" in got["cc_mode"][1]


def test_off_and_emulated_are_not_applicable() -> None:
    nv = fake_nvml.make()
    assert {v[0] for v in results(OFF, nv).values()} == {"not applicable"}
    got = results(EMULATED, nv)
    assert {v[0] for v in got.values()} == {"not applicable"} and "emulated" in got["cc_mode"][1]
    assert nv.calls == []  # neither asks NVML


def test_require_refuses_on_fail_and_unknown_warn_only_on_fail() -> None:
    nv = fake_nvml.make(ready=fake_nvml.NVMLError("x"), devtools=1)
    report = preflight.run(mode="require", state=real(nv), pynvml=nv, import_detectors=False)
    line = report.refusal()
    assert line is not None and "\n" not in line and "devtools fail" in line and "gpus_ready unknown" in line
    assert [c.name for c in report.blocking("warn")] == ["devtools"]
    assert report.as_dict()["ok"] is False
    ok = preflight.run(mode="require", state=real(fake_nvml.make()), pynvml=fake_nvml.make(),
                       import_detectors=False)
    assert ok.refusal() is None and ok.as_dict()["ok"] is True


def test_check_results_are_validated() -> None:
    with pytest.raises(ValueError):
        preflight.Check("x", "maybe", "")


def test_mode_auto_is_warn_on_real_cc_and_off_otherwise() -> None:
    assert preflight.effective_mode("auto", real(fake_nvml.make())) == "warn"
    assert preflight.effective_mode("auto", FORCED) == "off"
    assert preflight.effective_mode("auto", EMULATED) == "off"
    assert preflight.effective_mode("require", FORCED) == "require"
