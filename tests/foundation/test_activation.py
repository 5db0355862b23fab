"""Activation as users meet it: invalid settings change nothing, strict mode fails only for what should
apply, failure is all-or-nothing (exports included), disable tells the truth, children inherit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cc_runtime import runtime
from cc_runtime.patching import Patch, PatchError

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import json, os, sys
    before = dict(os.environ)
    import cc_runtime
    changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
    st = cc_runtime.cc_state()
    print("REPORT" + json.dumps({"changed": changed, "label": st.label, "source": st.source,
                                 "pynvml": "pynvml" in sys.modules, "ctypes": "ctypes" in sys.modules, "wrapt": "wrapt" in sys.modules,
                                 "patches_loaded": "cc_runtime.patches" in sys.modules,
                                 "reason": st.reason}))
""")


def _child(env_extra: dict, code: str = CHILD) -> tuple[subprocess.CompletedProcess, dict | None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    env.update(env_extra)
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("REPORT")]
    return r, (json.loads(lines[-1][6:]) if lines else None)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("env", [
    {"CC_RUNTIME_EMULATE": "h300"}, {"CC_RUNTIME_PATCHES": "sglang.readback_coalese"},
    {"CC_RUNTIME_SHUTDOWN_TIMEOUT_S": "inf", "CC_RUNTIME_CC": "1"},
    {"CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS": "\u0661", "CC_RUNTIME_CC": "1"},
])
def test_invalid_setting_on_import_prints_one_line_and_changes_nothing(env):
    r, rep = _child(env)
    assert r.returncode == 0, r.stderr
    assert rep["changed"] == [] and rep["label"] == "off"
    assert len(r.stderr.strip().splitlines()) == 1 and "is not valid" in r.stderr


@pytest.mark.timeout(300)
def test_forced_strict_import_succeeds_without_sglang_or_flashinfer():
    r, rep = _child({"CC_RUNTIME_CC": "1", "CC_RUNTIME_STRICT": "1"})
    assert r.returncode == 0, r.stderr
    assert rep["label"] == "on" and "CC_RUNTIME_BOOTSTRAP" in rep["changed"]


@pytest.mark.timeout(300)
def test_disable_is_reported_as_disabled_and_exports_nothing():
    code = CHILD + "print('PATCHES' + json.dumps({p['name']: [p['status'], p['reason']] for p in cc_runtime.status()['patches']}))"
    r, rep = _child({"CC_RUNTIME_DISABLE": "1", "CC_RUNTIME_CC": "1"}, code)
    assert r.returncode == 0, r.stderr
    assert rep["label"] == "disabled" and rep["source"] == "disabled" and rep["changed"] == []
    patches = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("PATCHES")][-1][7:])
    assert {s for s, _ in patches.values()} == {"disabled"}
    assert all("CC_RUNTIME_DISABLE=1" in why for _, why in patches.values())


@pytest.mark.timeout(300)
def test_child_inherits_the_decision_without_nvml_or_patch_modules():
    parent, rep = _child({})
    assert rep["ctypes"] and "NVML" in rep["reason"]  # the parent asked NVML (no GPU here: off)
    # Off CC `import cc_runtime` exports nothing: children are not bootstrapped (no start-up cost).
    assert rep["changed"] == []
    # `cc-runtime launch` bootstraps every child even off CC, so it hands them its decision.
    decision = json.loads(subprocess.run(
        [sys.executable, "-c", "import cc_runtime, os; from cc_runtime.cli import launch_env; "
                               "print(launch_env(dict(os.environ))['CC_RUNTIME_DECISION'])"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120).stdout)
    assert decision["enabled"] is False and decision["cc"] == decision["emulate"] == ""
    r, child = _child({"CC_RUNTIME_DECISION": json.dumps(decision), "CC_RUNTIME_BOOTSTRAP": "1"})
    assert r.returncode == 0, r.stderr
    assert child["label"] == "off" and "inherited" in child["reason"]
    assert not child["pynvml"] and not child["ctypes"] and not child["wrapt"] and not child["patches_loaded"]
    # a child with its own explicit setting decides for itself
    r, own = _child({"CC_RUNTIME_DECISION": json.dumps(decision), "CC_RUNTIME_CC": "1"})
    assert own["label"] == "on" and own["source"] == "env"


def _patches(*extra: Patch) -> list[Patch]:
    def export(ctx):
        ctx.setenv("CCRT_TEST_UPSTREAM_SWITCH", "1")

    return [Patch(name="test.env", target="wrapt", versions=">=0", summary="", upstream="", apply=export),
            *extra]


def test_failed_activation_restores_every_export(monkeypatch):
    """All-or-nothing through the public API: the upstream switch and every CC_RUNTIME_* export go."""
    def broken(ctx):
        raise RuntimeError("upstream renamed it")

    bad = Patch(name="test.broken", target="packaging", versions=">=0", summary="", upstream="",
                apply=broken)
    monkeypatch.setattr("cc_runtime.patches.all_patches", lambda: _patches(bad))
    for name in ("CC_RUNTIME_BOOTSTRAP", "CC_RUNTIME_DECISION", "CC_RUNTIME_CC", "CC_RUNTIME_STRICT"):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    with pytest.raises(PatchError, match="test.broken failed"):
        runtime.activate(cc="1", strict=True)
    assert dict(os.environ) == before
    assert runtime.describe()["failure"].startswith("PatchError")
    assert runtime.manager().records["test.env"].status == "disabled"


def test_successful_activation_and_deactivate_restore_the_environment(monkeypatch):
    monkeypatch.setattr("cc_runtime.patches.all_patches", lambda: _patches())
    for name in ("CC_RUNTIME_BOOTSTRAP", "CC_RUNTIME_DECISION", "CC_RUNTIME_CC"):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    state = runtime.activate(cc="1")
    assert state.label == "on" and os.environ["CCRT_TEST_UPSTREAM_SWITCH"] == "1"
    assert os.environ["CC_RUNTIME_CC"] == "1" and json.loads(os.environ["CC_RUNTIME_DECISION"])["enabled"]
    runtime.deactivate()
    assert dict(os.environ) == before


def test_fixed_settings_are_picked_up_by_a_later_activate(monkeypatch):
    monkeypatch.setenv("CC_RUNTIME_TIMER", "bogus")
    runtime.auto_activate()
    from cc_runtime import detect

    assert "invalid setting" in detect.cc_state().reason
    monkeypatch.setenv("CC_RUNTIME_TIMER", "auto")
    monkeypatch.setenv("CC_RUNTIME_CC", "0")
    assert runtime.activate().reason == "forced off by CC_RUNTIME_CC=0"
