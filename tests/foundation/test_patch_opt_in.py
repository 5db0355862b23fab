"""Opt-in patches (``Patch.opt_in``, experimental ones): applied only when named in CC_RUNTIME_PATCHES."""

from __future__ import annotations

import importlib
import sys

from test_patching import ON, make_patch, target  # noqa: F401 - the fixture

from cc_runtime.patching import PatchManager
from cc_runtime.settings import Settings


def test_opt_in_patch_needs_its_exact_name(target):  # noqa: F811 - fixture
    mod = importlib.import_module(target)
    for patches, applied in (("*", False), ("test.*", False), ("test.compute", True)):
        mgr = PatchManager([make_patch(target, opt_in=True)])
        # replace(): the registry would (rightly) reject test-only patch names in the variable itself
        allow = None if patches == "*" else frozenset({patches})
        mgr.activate(ON, Settings.load(env={}).replace(patches=allow))
        rec = mgr.records["test.compute"]
        assert (rec.status == "applied") is applied, (patches, rec.status, rec.reason)
        assert (mod.compute(1) == 12) is applied
        if not applied:
            assert rec.reason == "opt-in: applies only when named in CC_RUNTIME_PATCHES"
        assert mgr.as_list()[0]["opt_in"] is True
        mgr.revert_all()
        assert sys.modules[target].compute(1) == 2


def test_ordinary_patch_is_not_opt_in(target):  # noqa: F811 - fixture
    importlib.import_module(target)
    mgr = PatchManager([make_patch(target)])
    mgr.activate(ON, Settings.load(env={}))
    assert mgr.records["test.compute"].status == "applied" and mgr.as_list()[0]["opt_in"] is False
    mgr.revert_all()


def test_star_in_a_list_keeps_every_patch_and_adds_the_named_opt_in_one():
    """`*,<opt-in name>`: how a user adds an experimental patch without listing every other one."""
    from cc_runtime.patches import all_patches

    opt_in = next(p.name for p in all_patches() if p.opt_in)
    s = Settings.load(env={"CC_RUNTIME_PATCHES": f"*,{opt_in}"})
    assert all(s.patch_allowed(p.name) for p in all_patches())
    assert [p.name for p in all_patches() if s.patch_named(p.name)] == [opt_in]
    assert not Settings.load(env={}).patch_named(opt_in)
