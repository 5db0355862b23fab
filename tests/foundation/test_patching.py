"""The patch framework on a real (throw-away) installed distribution: real import machinery, real
post-import hooks (wrapt), real package metadata for the version gate. Nothing is mocked."""

from __future__ import annotations

import dataclasses
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
    assert rec.status == "waiting" and target not in sys.modules
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
    assert mgr.records["test.compute"].status == "disabled"
    assert mgr.records["test.compute"].reason == "reverted: reverted on request"


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
    assert rec.status == "failed" and "init_overlap" in rec.reason and "rolled back" in rec.reason
    assert mod.compute is orig and "CCRT_TEST_VAR" not in os.environ
    assert any("test.compute" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)


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
    assert rec.status == "skipped" and "1.4.2 is outside every supported range" in rec.reason
    assert ">=2.0" in rec.reason
    assert importlib.import_module(target).compute(1) == 2


def test_missing_target_is_skipped_not_fatal_even_in_strict_mode():
    mgr = PatchManager([make_patch("ccrt_absent_module", target="ccrt-absent")])
    mgr.activate(ON, Settings.load(env={"CC_RUNTIME_STRICT": "1"}))
    assert mgr.records["test.compute"].status == "not applicable"
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
    mgr.activate(ON, Settings.load(env={}).replace(patches=frozenset({"test.emulated_only"})))
    assert mgr.records["test.compute"].reason == "not in CC_RUNTIME_PATCHES"
    assert mgr.records["test.emulated_only"].status == "not applicable"  # not wanted under forced CC


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
    assert not any("patch test.old" in m for m in msgs)  # a sibling covers 1.4.2: quiet
    assert [m for m in msgs if m.startswith("cc_runtime: CC on")] == [
        "cc_runtime: CC on (env, forced on by test); patches: 1 applied, 1 not applicable"]


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
        mgr = PatchManager(newer)
        mgr.activate(ON, Settings.load(env={}))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and all("ccrt-target 1.4.2 is outside every supported range of ccrt-target "
                                      "(>=1.5,<1.6; >=1.6)" in w for w in warnings)
    assert {r.status for r in mgr.records.values()} == {"skipped"}


def test_reactivation_with_cc_off_reverts_what_was_applied(target):
    mod = importlib.import_module(target)
    orig = mod.compute
    mgr = PatchManager([make_patch(target)])
    mgr.activate(ON, Settings.load(env={}))
    assert mod.compute(1) == 12
    mgr.activate(OFF, Settings.load(env={}))
    assert mod.compute is orig and mgr.records["test.compute"].status == "disabled"
    mgr.activate(ON, Settings.load(env={}).replace(patches=frozenset({"other.*"})))
    assert mod.compute is orig and mgr.records["test.compute"].reason == "not in CC_RUNTIME_PATCHES"
    mgr.activate(ON, Settings.load(env={}))
    assert mod.compute(1) == 12


STRICT = {"CC_RUNTIME_STRICT": "1"}


def test_strict_mode_ignores_a_sibling_that_covers_the_installed_version(target):
    """flashinfer.autotuner_timer_legacy on 0.7.2 / sglang.readback_worker on 0.5.23: not applicable."""
    mod = importlib.import_module(target)
    mgr = PatchManager([make_patch(target, name="test.old", versions="<1.4"),
                        make_patch(target, name="test.new", versions=">=1.4,<2")])
    mgr.activate(ON, Settings.load(env=STRICT))
    assert mgr.records["test.old"].status == "not applicable" and "test.new" in mgr.records["test.old"].reason
    assert mgr.records["test.new"].status == "applied" and mod.compute(1) == 12


def test_strict_failure_rolls_back_every_applied_patch_and_its_env(target):
    """All-or-nothing: one patch that should apply and cannot undoes the ones that did."""
    mod = importlib.import_module(target)
    orig = mod.compute

    def export(ctx):
        ctx.setenv("CCRT_UPSTREAM_SWITCH", "1")

    def broken(ctx):
        raise RuntimeError("renamed upstream")

    restored = []
    mgr = PatchManager([dataclasses.replace(make_patch(target, name="test.env", apply=export), module=None),
                        make_patch(target, name="test.compute"),
                        make_patch(target, name="test.broken", apply=broken, family="other")])
    mgr.on_strict_failure = lambda message: restored.append("test.broken" in message)
    with pytest.raises(PatchError, match="test.broken failed"):
        mgr.activate(ON, Settings.load(env=STRICT))
    assert "CCRT_UPSTREAM_SWITCH" not in os.environ and mod.compute is orig and restored == [True]
    assert {n: r.status for n, r in mgr.records.items()} == {
        "test.env": "disabled", "test.compute": "disabled", "test.broken": "failed"}


def test_strict_failure_at_import_time_fails_that_import_with_everything_reverted(target):
    def export(ctx):
        ctx.setenv("CCRT_UPSTREAM_SWITCH", "1")

    def broken(ctx):
        raise AttributeError("Scheduler has no attribute init_overlap")

    mgr = PatchManager([dataclasses.replace(make_patch(target, name="test.env", apply=export), module=None),
                        make_patch(target, name="test.broken", apply=broken, family="other")])
    mgr.activate(ON, Settings.load(env=STRICT))
    assert os.environ["CCRT_UPSTREAM_SWITCH"] == "1" and mgr.records["test.broken"].status == "waiting"
    with pytest.raises(PatchError, match="init_overlap"):
        importlib.import_module(target)
    assert "CCRT_UPSTREAM_SWITCH" not in os.environ
    assert mgr.records["test.env"].status == "disabled"


def test_strict_mode_fails_on_a_version_outside_every_range_of_the_family(target):
    mgr = PatchManager([make_patch(target, name="test.v2", versions=">=2")])
    with pytest.raises(PatchError, match="outside every supported range"):
        mgr.activate(ON, Settings.load(env=STRICT))


def test_every_registered_patch_records_the_real_upstream_tests_that_verify_it():
    """`cc-runtime patches` and the README show this record; a patch without one reads "none"."""
    import re

    from cc_runtime.patches import all_patches

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for patch in all_patches():
        cpu = patch.verified_by().cpu
        assert cpu, f"{patch.name}: no CPU evidence in cc_runtime/patching/evidence.py"
        for line in cpu:
            files = re.findall(r"tests/[\w/]+\.py", line)
            assert files, f"{patch.name}: {line!r} names no test file"
            for f in files:
                assert os.path.isfile(os.path.join(root, f)), f"{patch.name}: {f} does not exist"


def test_a_named_family_is_not_covered_by_patches_of_other_families(target):
    """The staging / readback / hicache families: another fix applying to the installed version does not
    make a gap in this fix's ranges 'not applicable' (strict mode fails); the default family does."""
    importlib.import_module(target)
    other = make_patch(target, name="test.other", versions=">=1.4")
    for family, status in (("test.fix", "skipped"), (None, "not applicable")):
        mgr = PatchManager([make_patch(target, name="test.old", versions="<1.4", family=family), other])
        if family:
            with pytest.raises(PatchError, match="test.old"):
                mgr.activate(ON, Settings.load(env=STRICT))
        else:
            mgr.activate(ON, Settings.load(env=STRICT))
            assert "for those releases only" in mgr.records["test.old"].reason
        assert mgr.records["test.old"].status == status, mgr.records["test.old"].reason
        mgr.revert_all()
