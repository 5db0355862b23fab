"""settings is the ground floor: validating CC_RUNTIME_PATCHES imports no patch module."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cc_runtime.patch_names import PATCH_NAMES
from cc_runtime.patches import all_patches

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_patch_names_match_the_registry() -> None:
    registered = [p.name for p in all_patches()]
    missing = sorted(set(registered) - set(PATCH_NAMES))
    assert not missing, f"add {missing} to cc_runtime/patch_names.py"
    assert sorted(PATCH_NAMES) == sorted(registered), "cc_runtime/patch_names.py names a patch that is not registered"


def test_settings_validates_patch_names_without_importing_patches() -> None:
    code = (
        "import json, sys\n"
        "from cc_runtime import settings\n"
        "s = settings.Settings.load(env={'CC_RUNTIME_PATCHES': 'sglang.*,triton.autotune_timer'})\n"
        "try:\n"
        "    settings.Settings.load(env={'CC_RUNTIME_PATCHES': 'sglang.readback_coalese'})\n"
        "    bad = None\n"
        "except settings.SettingsError as exc:\n"
        "    bad = str(exc)\n"
        "print(json.dumps({'bad': bad, 'modules': sorted(m for m in sys.modules if m.startswith('cc_runtime.'))}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    env.update(PYTHONPATH=ROOT, CC_RUNTIME_CC="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["bad"] and "did you mean sglang.readback_coalesce" in data["bad"]
    loaded = [m for m in data["modules"] if m.startswith(("cc_runtime.patches", "cc_runtime.patching"))]
    assert loaded == [], f"settings pulled in the patch layer: {loaded}"
