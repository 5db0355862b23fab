"""``CC_RUNTIME_EMULATE`` / ``activate(emulate=...)``: the emulation patch through the patch manager.

On this CPU-only machine torch has no CUDA, so the patch module's test hook ``BACKEND_FOR_TESTS``
supplies the stand-in backend (meta tensors + a simulated stream); without it the patch must skip
with a reason that points at the simulated device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import torch

import cc_runtime
from cc_runtime.emulator import SimDevice
from cc_runtime.emulator import cuda as ec
from cc_runtime.patches import emulation
from cc_runtime.runtime import _reset_for_tests, manager


@pytest.fixture
def clean(monkeypatch):
    for var in ("CC_RUNTIME_EMULATE", "CC_RUNTIME_PATCHES", "CC_RUNTIME_CC", "CC_RUNTIME_BOOTSTRAP"):
        monkeypatch.delenv(var, raising=False)  # and monkeypatch restores whatever activate() writes
    _reset_for_tests()
    sim = SimDevice(None)
    yield sim
    emulation.BACKEND_FOR_TESTS = None
    _reset_for_tests()
    sim.shutdown()


def _record() -> dict:
    return next(r for r in manager().as_list() if r["name"] == "emulation")


def test_activate_emulate_applies_and_deactivate_restores(clean) -> None:
    originals = {a: torch.Tensor.__dict__.get(a) for a in ("to", "copy_", "cpu", "item", "tolist", "cuda")}
    originals_other = (torch.tensor, torch.cuda.Event.__dict__["elapsed_time"], torch.cuda.cudart,
                       threading.Thread.__dict__["_bootstrap_inner"], torch._C._len_torch_dispatch_stack())
    emulation.BACKEND_FOR_TESTS = ec.StandInBackend(clean.Stream())
    state = cc_runtime.activate(emulate="h100", patches="emulation")
    assert state.label == "emulated:h100" and state.source == "emulated"
    assert _record()["status"] == "applied", _record()
    em = ec.active()
    assert em is not None and em.profile.name == "h100" and em.active
    torch.ones(8).to("meta", non_blocking=True)
    assert em.stats["h2d"] == 1
    assert os.environ["CC_RUNTIME_EMULATE"] == "h100"  # children inherit the decision
    cc_runtime.deactivate()
    assert _record()["status"] == "disabled" and ec.active() is None and not em.active
    assert {a: torch.Tensor.__dict__.get(a) for a in originals} == originals
    after = (torch.tensor, torch.cuda.Event.__dict__["elapsed_time"], torch.cuda.cudart,
             threading.Thread.__dict__["_bootstrap_inner"], torch._C._len_torch_dispatch_stack())
    assert all(a is b or a == b for a, b in zip(after, originals_other, strict=True))


def test_without_cuda_the_patch_is_not_applicable_with_a_reason(clean) -> None:
    if torch.version.cuda is not None:
        pytest.skip("this torch has CUDA: the patch would apply")
    cc_runtime.activate(emulate="b300", patches="emulation")
    rec = _record()
    assert rec["status"] == "not applicable" and "no CUDA build" in rec["reason"] and "SimDevice" in rec["reason"]
    assert torch.Tensor.__dict__.get("to") is None


def test_cc_off_and_forced_cc_do_not_emulate(clean) -> None:
    cc_runtime.activate(cc="1", patches="emulation")
    assert _record()["status"] == "not applicable"  # forced CC wants the fixes, not the emulator


@pytest.mark.timeout(60)
def test_child_process_inherits_emulation(tmp_path) -> None:
    code = ("import json, cc_runtime, torch; from cc_runtime.runtime import manager; "
            "r = [x for x in manager().as_list() if x['name'] == 'emulation'][0]; "
            "print(json.dumps({'cc': cc_runtime.cc_state().label, 'status': r['status'], 'reason': r['reason']}))")
    env = {**os.environ, "CC_RUNTIME_EMULATE": "h100", "CC_RUNTIME_PATCHES": "emulation"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["cc"] == "emulated:h100"
    assert got["status"] == ("not applicable" if torch.version.cuda is None else "applied"), got
    assert "WARNING" not in out.stderr  # not applicable is not a failure: nothing to warn about
