"""Attestation: the nonce must come back in the NVML report and in the verifier's claims.

Stand-ins, each because the real thing needs a CC GPU: the fake NVML (preflight_fake_nvml.py) and a
stand-in `nvattest` executable (standin/nvattest, labelled as such; NVIDIA's nvattest is a C++ tool, not
on PyPI). The nv-local-gpu-verifier package itself is exercised in test_preflight_local_verifier.py."""

from __future__ import annotations

import json
from pathlib import Path

import preflight_fake_nvml as fake_nvml
import pytest

from cc_runtime import detect
from cc_runtime.preflight import attestation

STANDIN = str(Path(__file__).parent / "standin" / "nvattest")
EMULATED = detect.CCState(True, "emulated", "CC_RUNTIME_EMULATE=h100", mode="emulated", profile="h100")


def run(nv, mode: str | None, monkeypatch, tmp_path, attest: str = "local", timeout: float = 20.0):
    if mode is not None:
        monkeypatch.setenv("NVATTEST_STANDIN_MODE", mode)
    monkeypatch.setenv("NVATTEST_STANDIN_ARGS", str(tmp_path / "args.json"))
    which = (lambda name: STANDIN) if mode is not None else (lambda name: None)
    return attestation.check(detect.probe_nvml(nv), attest, timeout, nv, which=which)


def test_a_verified_report_with_this_runs_nonce_passes(monkeypatch, tmp_path) -> None:
    c = run(fake_nvml.make(gpus=["cc", "cc"]), "pass", monkeypatch, tmp_path)
    assert c.result == "pass", c.reason
    args = json.loads((tmp_path / "args.json").read_text())
    assert args[:7] == ["--format", "json", "attest", "--device", "gpu", "--verifier", "local"]
    nonce = args[args.index("--nonce") + 1]
    assert len(bytes.fromhex(nonce)) == 32
    assert [r["nonce_echoed"] for r in c.evidence["reports"]] == [True, True]
    assert nonce not in json.dumps(c.evidence) and "ueid" not in json.dumps(c.evidence)


def test_each_run_uses_a_fresh_nonce(monkeypatch, tmp_path) -> None:
    seen = set()
    for _ in range(3):
        run(fake_nvml.make(), "pass", monkeypatch, tmp_path)
        args = json.loads((tmp_path / "args.json").read_text())
        seen.add(args[args.index("--nonce") + 1])
    assert len(seen) == 3


@pytest.mark.parametrize("mode, result, words", [
    ("fail", "fail", "rejected"),
    ("wrong-nonce", "fail", "another nonce"),
    ("no-nonce", "fail", "no nonce"),
    ("garbage", "fail", "no JSON"),
])
def test_a_rejection_or_a_nonce_mismatch_fails(mode, result, words, monkeypatch, tmp_path) -> None:
    c = run(fake_nvml.make(), mode, monkeypatch, tmp_path)
    assert (c.result, words in c.reason) == (result, True), c.reason


def test_a_hanging_verifier_is_unknown_after_the_timeout(monkeypatch, tmp_path) -> None:
    c = run(fake_nvml.make(), "hang", monkeypatch, tmp_path, timeout=1.0)
    assert c.result == "unknown" and "within 1 s" in c.reason


def test_no_verifier_installed_is_unknown(monkeypatch, tmp_path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "verifier", None)  # nv-local-gpu-verifier absent
    c = run(fake_nvml.make(), None, monkeypatch, tmp_path)
    assert c.result == "unknown" and "no verifier installed" in c.reason and "nvattest" in c.reason


def test_a_report_without_the_nonce_is_a_replay(monkeypatch, tmp_path) -> None:
    c = run(fake_nvml.make(echo_nonce=False), "pass", monkeypatch, tmp_path)
    assert c.result == "fail" and "replayed" in c.reason


def test_no_report_is_unknown(monkeypatch, tmp_path) -> None:
    c = run(fake_nvml.make(report_error=fake_nvml.NVMLError("Not Supported")), "pass", monkeypatch, tmp_path)
    assert c.result == "unknown" and "Not Supported" in c.reason


def test_not_requested_emulated_and_off_are_not_applicable(monkeypatch, tmp_path) -> None:
    nv = fake_nvml.make()
    assert attestation.check(detect.probe_nvml(nv), "off", 5, nv).result == "not applicable"
    c = attestation.check(EMULATED, "local", 5, nv)
    assert c.result == "not applicable" and "emulated" in c.reason
    off = detect.CCState(False, "none", "x")
    assert attestation.check(off, "remote", 5, nv).result == "not applicable"


def test_remote_passes_remote_to_the_verifier(monkeypatch, tmp_path) -> None:
    c = run(fake_nvml.make(), "pass", monkeypatch, tmp_path, attest="remote")
    assert c.result == "pass"
    assert json.loads((tmp_path / "args.json").read_text())[6] == "remote"
