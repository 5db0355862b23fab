"""`require` through SGLang's real plugin loader (``load_plugins()``, the first line of every scheduler
process): the process ends with one line and non-zero status before any weight could load; SGLang's
loader swallows plugin exceptions, so only an exit stops it. `warn` lets it run on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.upstream

CODE = """
from sglang.srt.plugins import load_plugins
load_plugins()
print("SCHEDULER WOULD LOAD WEIGHTS NOW")
"""


def _run(extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CC_RUNTIME_", "SGLANG_FORCE", "FLASHINFER_"))}
    env.update(SGLANG_PLUGINS="cc_runtime", CC_RUNTIME_CC="1", **extra)
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=280)


@pytest.mark.timeout(300)
def test_require_through_load_plugins_ends_the_process_with_one_line(sglang_version) -> None:
    r = _run({"CC_RUNTIME_PREFLIGHT": "require"})
    assert r.returncode == 1, (r.stdout, r.stderr[-2000:])
    assert "SCHEDULER WOULD LOAD WEIGHTS NOW" not in r.stdout
    refusals = [ln for ln in r.stderr.splitlines() if "preflight" in ln]
    assert len(refusals) == 1 and "refused" in refusals[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr


@pytest.mark.timeout(300)
def test_warn_through_load_plugins_carries_on(sglang_version) -> None:
    r = _run({"CC_RUNTIME_PREFLIGHT": "warn"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "SCHEDULER WOULD LOAD WEIGHTS NOW" in r.stdout
