"""SGLang's real plugin loader (``sglang.srt.plugins.load_plugins``, called first thing in every
scheduler process) must find and activate cc_runtime through our entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.upstream

CODE = """
import json, sys
assert "cc_runtime" not in sys.modules
from sglang.srt.plugins import load_plugins
load_plugins()
import cc_runtime
st = cc_runtime.cc_state()
print("REPORT" + json.dumps({"enabled": st.enabled, "source": st.source,
      "force": __import__("os").environ.get("SGLANG_FORCE_CONFIDENTIAL_COMPUTE")}))
"""


@pytest.mark.timeout(300)
def test_sglang_load_plugins_activates_cc_runtime():
    if not os.environ.get("CC_RUNTIME_TEST_SGLANG"):
        pytest.skip("not in an upstream-* nox session")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    env.update(CC_RUNTIME_CC="1", SGLANG_PLUGINS="cc_runtime")
    r = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("REPORT")][-1][6:])
    assert rep["enabled"] and rep["source"] == "env"
    from packaging.version import Version

    if Version(os.environ["CC_RUNTIME_TEST_SGLANG"]) >= Version("0.5.23"):
        assert rep["force"] == "1"


STRICT_CODE = """
import json, os, sys
from sglang.srt.plugins import load_plugins
before = dict(os.environ)  # after SGLang's own import-time settings (CUDA caches, ...)
load_plugins()
assert "cc_runtime" in sys.modules, "SGLang did not load the cc_runtime plugin"
import cc_runtime
st = cc_runtime.cc_state()
rows = {p["name"]: p["status"] for p in cc_runtime.status()["patches"]}
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print("REPORT" + json.dumps({"label": st.label, "rows": rows, "changed": changed}))
"""


def _run_plugin(extra: dict, code: str = STRICT_CODE) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CC_RUNTIME_", "SGLANG_FORCE", "FLASHINFER_"))}
    env.update(SGLANG_PLUGINS="cc_runtime", **extra)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    return r, json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("REPORT")][-1][6:])


@pytest.mark.timeout(300)
def test_forced_strict_through_load_plugins_applies_cleanly():
    """CC forced + strict through SGLang's real load_plugins(): no strict failure (version siblings are
    'not applicable'), nothing skipped or failed, and the upstream switch exported on 0.5.23."""
    if not os.environ.get("CC_RUNTIME_TEST_SGLANG"):
        pytest.skip("not in an upstream-* nox session")
    r, rep = _run_plugin({"CC_RUNTIME_CC": "1", "CC_RUNTIME_STRICT": "1"})
    assert "Failed to load plugin" not in r.stderr, r.stderr[-3000:]
    assert rep["label"] == "on"
    assert not {n: s for n, s in rep["rows"].items() if s in ("skipped", "failed")}, rep["rows"]
    from packaging.version import Version

    if Version(os.environ["CC_RUNTIME_TEST_SGLANG"]) >= Version("0.5.23"):
        assert "SGLANG_FORCE_CONFIDENTIAL_COMPUTE" in rep["changed"]
        assert rep["rows"]["sglang.readback_worker"] == "not applicable"
    else:
        assert rep["rows"]["sglang.readback_coalesce"] == "not applicable"


@pytest.mark.timeout(300)
def test_invalid_setting_through_load_plugins_changes_nothing():
    if not os.environ.get("CC_RUNTIME_TEST_SGLANG"):
        pytest.skip("not in an upstream-* nox session")
    r, rep = _run_plugin({"CC_RUNTIME_CC": "1", "CC_RUNTIME_STRICT": "1", "CC_RUNTIME_EMULATE": "h300"})
    assert rep["changed"] == [] and rep["label"] == "off"
    assert r.stderr.count("CC_RUNTIME_EMULATE='h300' is not valid") == 1


@pytest.mark.timeout(300)
def test_forced_strict_import_exits_0():
    if not os.environ.get("CC_RUNTIME_TEST_SGLANG"):
        pytest.skip("not in an upstream-* nox session")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    env.update(CC_RUNTIME_CC="1", CC_RUNTIME_STRICT="1")
    r = subprocess.run([sys.executable, "-c", "import cc_runtime"], env=env, capture_output=True, text=True,
                       timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]


EVERY_TARGET_CODE = STRICT_CODE.replace("rows = {", """import importlib
from cc_runtime.patches import all_patches
for p in all_patches():
    if p.module:
        try:
            importlib.import_module(p.module)
        except ImportError:
            pass  # a module of the other SGLang release (its patch is 'not applicable' here)
rows = {""")


@pytest.mark.timeout(300)
def test_forced_strict_every_patch_applies_once_its_real_target_is_imported():
    """After load_plugins(), CC forced + strict, importing every patch's real target module: each patch is
    applied or, as a version sibling, not applicable (only the opt-in one stays disabled); none waits."""
    if not os.environ.get("CC_RUNTIME_TEST_SGLANG"):
        pytest.skip("not in an upstream-* nox session")
    r, rep = _run_plugin({"CC_RUNTIME_CC": "1", "CC_RUNTIME_STRICT": "1"}, EVERY_TARGET_CODE)
    rows = rep["rows"]
    assert rows.pop("sglang.allreduce_fusion_ipc") == "disabled"
    assert rows.pop("emulation") == "not applicable"  # CC forced, not emulated
    assert {n: s for n, s in rows.items() if s not in ("applied", "not applicable")} == {}
    from cc_runtime.patches import all_patches

    # No CUDA device here: the 0.5.23 worker's blocking-waits fix is not applicable (its own device check).
    assert rows.pop("sglang.d2h_worker_blocking_waits") == "not applicable"
    for family in ("sglang.readback", "sglang.readback_snapshot", "sglang.hicache_host_pool", "sglang.h2d_staging"):
        members = [p.name for p in all_patches() if p.family == family and p.name in rows]
        assert sorted(rows[n] for n in members) == ["applied", "not applicable"], (family, rows)
