"""Statuses a person can see without configuring logging: a failed patch warns on stderr once, the
emulator on a CPU-only torch reads `not applicable` with its reason (not a silent `failed`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

# A child with one patch whose apply raises (the stand-in for an upstream rename), forced CC.
FAILING = """
import logging, sys
{setup}
import cc_runtime
from cc_runtime import patches, runtime
from cc_runtime.patching import Patch

def broken(ctx):
    raise RuntimeError("upstream renamed it")

patches.all_patches = lambda: [Patch(name="test.broken", target="packaging", versions=">=0", summary="",
                                     upstream="", apply=broken)]
runtime.activate(cc="1")
st = {{p["name"]: p["status"] for p in cc_runtime.status()["patches"]}}
print("STATUS", st["test.broken"])
"""


def _run(code: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    env.update(env_extra, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def _warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "test.broken" in ln]


@pytest.mark.timeout(300)
def test_a_failed_patch_prints_one_warning_line_without_any_logging_configured():
    r = _run(FAILING.format(setup=""))
    assert r.returncode == 0, r.stderr
    assert "STATUS failed" in r.stdout
    lines = _warnings(r.stderr)
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("WARNING cc_runtime patch test.broken: failed (") and "upstream renamed it" in lines[0]


@pytest.mark.timeout(300)
def test_with_logging_configured_the_warning_goes_through_logging_once():
    r = _run(FAILING.format(setup="logging.basicConfig(format='LOGGED %(levelname)s %(name)s %(message)s')"))
    assert r.returncode == 0, r.stderr
    lines = _warnings(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("LOGGED WARNING cc_runtime.patching "), r.stderr


@pytest.mark.timeout(300)
def test_a_log_level_above_warning_silences_it_on_both_routes():
    r = _run(FAILING.format(setup=""), CC_RUNTIME_LOG_LEVEL="ERROR")
    assert r.returncode == 0 and "STATUS failed" in r.stdout, r.stderr
    assert _warnings(r.stderr) == []


@pytest.mark.timeout(300)
def test_emulating_on_a_cpu_only_torch_is_not_applicable_with_its_reason():
    if torch.version.cuda is not None:
        pytest.skip("this torch has CUDA: the emulation patch applies")
    code = ("import json, torch, cc_runtime\n"
            "rec = next(p for p in cc_runtime.status()['patches'] if p['name'] == 'emulation')\n"
            "print('REPORT' + json.dumps({'cc': cc_runtime.cc_state().label, **rec}))\n")
    r = _run(code, CC_RUNTIME_EMULATE="h100")
    assert r.returncode == 0, r.stderr
    rec = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("REPORT"))[6:])
    assert rec["cc"] == "emulated:h100"
    assert rec["status"] == "not applicable", rec
    assert "no CUDA build" in rec["reason"] and "SimDevice" in rec["reason"]
    assert "WARNING" not in r.stderr, r.stderr
