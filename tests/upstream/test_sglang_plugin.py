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
