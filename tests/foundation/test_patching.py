"""The patch framework on a real (throw-away) installed distribution: real import machinery, real
post-import hooks (wrapt), real package metadata for the version gate. Nothing is mocked."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import textwrap

import pytest

from cc_runtime.detect import CCState
from cc_runtime.patching import Patch, PatchError, PatchManager
from cc_runtime.settings import Settings

ON = CCState(True, "env", "forced on by test", mode="forced")
OFF = CCState(False, "none", "no GPU")


@pytest.fixture
def target(tmp_path, monkeypatch):
    """Installs a distribution `ccrt-target` 1.4.2 providing module `ccrt_target` into a temp site dir."""
    name = f"ccrt_target_{os.getpid()}_{id(tmp_path)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent('''
        def compute(x):
            return x + 1

        class Engine:
            def step(self):
                return "step"

            @staticmethod
            def helper():
                return "helper"

            @classmethod
            def build(cls):
                return cls
    '''))
    dist = tmp_path / "ccrt_target-1.4.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ccrt-target\nVersion: 1.4.2\n")
    (dist / "top_level.txt").write_text(name + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield name
    sys.modules.pop(name, None)


def plus_ten(wrapped, instance, args, kwargs):
    return wrapped(*args, **kwargs) + 10


def make_patch(module, apply=None, **kw):
    def default_apply(ctx):
        mod = sys.modules[module]
        ctx.wrap(mod, "compute", plus_ten)

    fields = dict(name="test.compute", target="ccrt-target", versions=">=1.4,<2", summary="adds ten",
                  upstream="none", apply=apply or default_apply, module=module)
    fields.update(kw)
    return Patch(**fields)


def test_pending_until_imported_then_applied(target):
    mgr = PatchManager([make_patch(target)])
    mgr.activate(ON, Settings.load(env={}))
    rec = mgr.records["test.compute"]
    assert rec.status == "pending" and target not in sys.modules
    mod = importlib.import_module(target)
    assert rec.status == "applied" and rec.version == "1.4.2"
    assert mod.compute(1) == 12


def test_already_imported_module_is_patched_at_activation(target):
    mod = importlib.import_module(target)
    mgr = PatchManager([make_patch(target)])
    mgr.activate(ON, Settings.load(env={}))
    assert mgr.records["test.compute"].status == "applied" and mod.compute(1) == 12


def test_activate_twice_applies_once(target):
    calls = []

    def apply(ctx):
        calls.append(1)
        ctx.wrap(sys.modules[target], "compute", plus_ten)

    mod = importlib.import_module(target)
    mgr = PatchManager([make_patch(target, apply=apply)])
    mgr.activate(ON, Settings.load(env={}))
    mgr.activate(ON, Settings.load(env={}))
    assert calls == [1] and mod.compute(0) == 11


def test_revert_restores_the_exact_original_objects(target):
    mod = importlib.import_module(target)
    originals = {k: mod.Engine.__dict__[k] for k in ("step", "helper", "build")}
    orig_compute = mod.compute

    def apply(ctx):
        ctx.wrap(mod, "compute", plus_ten)
        ctx.wrap(mod.Engine, "step", lambda w, i, a, k: "patched " + w(*a, **k))
        ctx.wrap(mod.Engine, "helper", lambda w, i, a, k: "patched " + w(*a, **k))
        ctx.wrap(mod.Engine, "build", lambda w, i, a, k: ("patched", w(*a, **k)))
        ctx.replace(mod, "added_attr", 1)

    mgr = PatchManager([make_patch(target, apply=apply)])
    mgr.activate(ON, Settings.load(env={}))
    assert mod.Engine().step() == "patched step" and mod.Engine.helper() == "patched helper"
    assert mod.Engine.build() == ("patched", mod.Engine) and mod.added_attr == 1
    assert mgr.revert_all() == []
    assert mod.compute is orig_compute and not hasattr(mod, "added_attr")
    for k, v in originals.items():
        assert mod.Engine.__dict__[k] is v
    assert mgr.records["test.compute"].status == "reverted"


def test_failing_apply_is_rolled_back_completely(target, caplog):
    mod = importlib.import_module(target)
    orig = mod.compute

    def apply(ctx):
        ctx.wrap(mod, "compute", plus_ten)
        ctx.setenv("CCRT_TEST_VAR", "x")
        raise AttributeError("Scheduler has no attribute init_overlap")

    mgr = PatchManager([make_patch(target, apply=apply)])
    with caplog.at_level(logging.INFO, logger="cc_runtime"):
        mgr.activate(ON, Settings.load(env={}))
    rec = mgr.records["test.compute"]
    assert rec.status == "skipped" and "init_overlap" in rec.reason and "rolled back" in rec.reason
    assert mod.compute is orig and "CCRT_TEST_VAR" not in os.environ
    assert any("test.compute" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)


def test_strict_mode_raises_instead_of_skipping(target):
    importlib.import_module(target)

    def apply(ctx):
        raise RuntimeError("renamed upstream")

    mgr = PatchManager([make_patch(target, apply=apply)])
    with pytest.raises(PatchError, match="renamed upstream"):
        mgr.activate(ON, Settings.load(env={"CC_RUNTIME_STRICT": "1"}))


def test_version_outside_range_is_skipped_with_reason(target):
    mgr = PatchManager([make_patch(target, versions=">=2.0")])
    mgr.activate(ON, Settings.load(env={}))
    rec = mgr.records["test.compute"]
    assert rec.status == "skipped" and "1.4.2 is outside the supported range >=2.0" in rec.reason
    assert importlib.import_module(target).compute(1) == 2


def test_missing_target_is_skipped_not_fatal_even_in_strict_mode():
    mgr = PatchManager([make_patch("ccrt_absent_module", target="ccrt-absent")])
    mgr.activate(ON, Settings.load(env={"CC_RUNTIME_STRICT": "1"}))
    assert mgr.records["test.compute"].status == "skipped"
    assert "not installed" in mgr.records["test.compute"].reason


def test_cc_off_changes_nothing(target):
    mod = importlib.import_module(target)
    orig = mod.compute
    mgr = PatchManager([make_patch(target)])
    mgr.activate(OFF, Settings.load(env={}))
    assert mgr.records["test.compute"].status == "disabled" and mod.compute is orig


def test_allowlist_and_when_gate(target):
    importlib.import_module(target)
    mgr = PatchManager([make_patch(target), make_patch(target, name="test.emulated_only",
                                                       when=lambda s: s.source == "emulated")])
    mgr.activate(ON, Settings.load(env={"CC_RUNTIME_PATCHES": "test.emulated_only"}))
    assert mgr.records["test.compute"].reason == "not in CC_RUNTIME_PATCHES"
    assert mgr.records["test.emulated_only"].status == "disabled"


def test_upstream_already_has_it(target):
    importlib.import_module(target)
    mgr = PatchManager([make_patch(target, upstream_has_it=lambda: "upstream 1.4 has the worker")])
    mgr.activate(ON, Settings.load(env={}))
    rec = mgr.records["test.compute"]
    assert (rec.status, rec.reason) == ("upstream", "upstream 1.4 has the worker")


def test_rebind_replaces_stale_from_imports(target, tmp_path):
    mod = importlib.import_module(target)
    user = f"{target}_user"
    (tmp_path / f"{user}.py").write_text(f"from {target} import compute\n")
    user_mod = importlib.import_module(user)
    try:
        def apply(ctx):
            ctx.wrap(mod, "compute", plus_ten, rebind=True)

        mgr = PatchManager([make_patch(target, apply=apply)])
        mgr.activate(ON, Settings.load(env={}))
        assert user_mod.compute(0) == 11
        mgr.revert_all()
        assert user_mod.compute(0) == 1
    finally:
        sys.modules.pop(user, None)


def test_deactivate_before_import_leaves_module_untouched(target):
    mgr = PatchManager([make_patch(target)])
    mgr.activate(ON, Settings.load(env={}))
    mgr.revert_all()
    assert importlib.import_module(target).compute(1) == 2
    assert mgr.records["test.compute"].status == "disabled"


def test_one_info_line_per_patch_and_a_summary(target, caplog):
    importlib.import_module(target)
    mgr = PatchManager([make_patch(target), make_patch(target, name="test.old", versions="<1")])
    with caplog.at_level(logging.INFO, logger="cc_runtime"):
        mgr.activate(ON, Settings.load(env={}))
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("patch test.compute: applied" in m for m in msgs) == 1
    assert sum("patch test.old: skipped" in m for m in msgs) == 1
    assert [m for m in msgs if m.startswith("cc_runtime: CC on")] == [
        "cc_runtime: CC on (env, forced on by test); patches: 1 applied, 1 skipped"]


def test_duplicate_patch_names_are_rejected(target):
    with pytest.raises(ValueError, match="duplicate"):
        PatchManager([make_patch(target), make_patch(target)])


def test_version_siblings_do_not_warn_but_an_unsupported_version_does(target, caplog):
    importlib.import_module(target)
    siblings = [make_patch(target, name="test.v1", versions=">=1.4,<1.5"),
                make_patch(target, name="test.v2", versions=">=1.5,<1.6")]
    with caplog.at_level(logging.INFO, logger="cc_runtime"):
        PatchManager(siblings).activate(ON, Settings.load(env={}))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    newer = [make_patch(target, name="test.v2", versions=">=1.5,<1.6"),
             make_patch(target, name="test.v3", versions=">=1.6")]
    with caplog.at_level(logging.INFO, logger="cc_runtime"):
        PatchManager(newer).activate(ON, Settings.load(env={}))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["cc_runtime: ccrt-target 1.4.2 is outside every supported range "
                        "(>=1.5,<1.6; >=1.6): its CC fixes are off"]


def test_reactivation_with_cc_off_reverts_what_was_applied(target):
    mod = importlib.import_module(target)
    orig = mod.compute
    mgr = PatchManager([make_patch(target)])
    mgr.activate(ON, Settings.load(env={}))
    assert mod.compute(1) == 12
    mgr.activate(OFF, Settings.load(env={}))
    assert mod.compute is orig and mgr.records["test.compute"].status == "reverted"
    mgr.activate(ON, Settings.load(env={"CC_RUNTIME_PATCHES": "other.*"}))
    assert mod.compute is orig and mgr.records["test.compute"].reason == "not in CC_RUNTIME_PATCHES"
    mgr.activate(ON, Settings.load(env={}))
    assert mod.compute(1) == 12
