"""Every patch whose declared version range contains the installed upstream must apply to the real
code of that version. Runs in the nox ``upstream-*`` sessions (real SGLang/FlashInfer/Triton/torch);
an upstream rename makes a patch skip, and that fails here."""

from __future__ import annotations

import importlib
import importlib.metadata
import os

import pytest

import cc_runtime
from cc_runtime import runtime
from cc_runtime.patching import installed_version, version_in_range

pytestmark = pytest.mark.upstream


@pytest.fixture
def sglang_version():
    wanted = os.environ.get("CC_RUNTIME_TEST_SGLANG")
    if not wanted:
        pytest.skip("not in an upstream-* nox session (CC_RUNTIME_TEST_SGLANG unset)")
    got = installed_version("sglang")
    assert got == wanted, f"session promised SGLang {wanted}, found {got}"
    return got


@pytest.mark.timeout(600)
def test_every_in_range_patch_applies_to_the_real_upstream(sglang_version):
    from cc_runtime.patches import all_patches

    runtime._reset_for_tests()
    # Every patch named, so opt-in (experimental) patches are checked against the real code too.
    cc_runtime.activate(cc="1", patches=",".join(p.name for p in all_patches()))
    mgr = runtime.manager()
    for rec in list(mgr.records.values()):
        if rec.status == "waiting" and rec.patch.module:
            importlib.import_module(rec.patch.module)
    report = {name: (r.status, r.reason) for name, r in mgr.records.items()}
    checked = 0
    for name, rec in mgr.records.items():
        version = installed_version(rec.patch.target)
        if version is None or not version_in_range(version, rec.patch.versions):
            continue
        if rec.status == "not applicable" and "not wanted" in rec.reason:
            continue  # e.g. the emulator's own patch only wants emulated CC
        checked += 1
        assert rec.status in ("applied", "upstream"), f"{name} on {rec.patch.target} {version}: {report[name]}"
    assert checked >= 1, report
    runtime.deactivate()
    assert all(r.status != "applied" for r in mgr.records.values())
