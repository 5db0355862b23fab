"""The serving-device check: on a known non-CUDA device, CUDA-only patches end ``not applicable (device
cpu)`` with nothing changed; unknown or CUDA devices keep the old behaviour. Real patch manager, real
post-import hooks, a throw-away installed distribution (the ``target`` fixture of test_patching)."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

from cc_runtime.detect import CCState
from cc_runtime.patching import NotApplicable, Patch, PatchManager
from cc_runtime.patching.device import device_from_args, require_cuda_device, serving_device
from cc_runtime.settings import Settings

ON = CCState(True, "env", "forced on by test", mode="forced")


@pytest.fixture
def target(tmp_path, monkeypatch):
    """A throw-away installed distribution `ccrt-devtarget` 1.0 with module `ccrt_devtarget_*`."""
    name = f"ccrt_devtarget_{os.getpid()}_{id(tmp_path)}"
    (tmp_path / f"{name}.py").write_text("def compute(x):\n    return x + 1\n")
    dist = tmp_path / "ccrt_devtarget-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ccrt-devtarget\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield name
    sys.modules.pop(name, None)


def make_patch(module, apply=None, **kw):
    def default_apply(ctx):
        ctx.wrap(sys.modules[module], "compute", lambda w, i, a, k: w(*a, **k) + 10)

    return Patch(name="test.compute", target="ccrt-devtarget", versions=">=1", summary="adds ten",
                 upstream="none", apply=apply or default_apply, module=module, **kw)


@pytest.mark.parametrize(("argv", "want"), [
    (["-m", "--model-path", "m", "--device", "cpu"], "cpu"),
    (["x", "--device=cuda:1"], "cuda"),
    (["x", "--device", "cuda", "--device", "cpu"], "cpu"),  # the last one wins, as with argparse
    (["x", "--device"], None),
    (["x", "--model-path", "cpu"], None),
])
def test_device_from_the_command_line(argv, want, monkeypatch):
    monkeypatch.delenv("SGLANG_USE_CPU_ENGINE", raising=False)
    assert device_from_args(argv) == want
    assert serving_device(argv)[0] == want


def test_sglang_cpu_engine_switch_means_cpu_when_no_device_given(monkeypatch):
    monkeypatch.setenv("SGLANG_USE_CPU_ENGINE", "1")
    assert serving_device(["x"]) == ("cpu", "SGLANG_USE_CPU_ENGINE=1")
    assert serving_device(["x", "--device", "cuda"])[0] == "cuda"
    monkeypatch.setenv("SGLANG_USE_CPU_ENGINE", "0")
    assert serving_device(["x"])[0] is None


def test_require_cuda_device(monkeypatch):
    monkeypatch.delenv("SGLANG_USE_CPU_ENGINE", raising=False)
    require_cuda_device(["x"])  # unknown: treated as CUDA
    require_cuda_device(["x", "--device", "cuda"])
    with pytest.raises(NotApplicable, match="device cpu"):
        require_cuda_device(["x", "--device", "cpu"])


def test_cuda_only_patch_is_not_applicable_on_a_cpu_device(target, monkeypatch):
    calls = []
    monkeypatch.setattr(sys, "argv", ["launch_server", "--device", "cpu"])
    mgr = PatchManager([make_patch(target, apply=lambda ctx: calls.append(1), needs_cuda_device=True)])
    mgr.activate(ON, Settings.load(env={}))
    importlib.import_module(target)
    rec = mgr.records["test.compute"]
    assert (rec.status, rec.reason) == ("not applicable", "device cpu")
    assert calls == []


def test_cuda_only_patch_applies_on_cuda_and_unknown_devices(target, monkeypatch):
    monkeypatch.delenv("SGLANG_USE_CPU_ENGINE", raising=False)
    for argv in (["launch_server", "--device", "cuda"], ["launch_server"]):
        monkeypatch.setattr(sys, "argv", argv)
        mgr = PatchManager([make_patch(target, needs_cuda_device=True)])
        mgr.activate(ON, Settings.load(env={}))
        mod = importlib.import_module(target)
        assert mgr.records["test.compute"].status == "applied", argv
        assert mod.compute(1) == 12
        mgr.revert_all()


def test_patch_without_the_flag_ignores_the_device(target, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["launch_server", "--device", "cpu"])
    mgr = PatchManager([make_patch(target)])  # target is not sglang: needs_cuda_device defaults to False
    mgr.activate(ON, Settings.load(env={}))
    assert importlib.import_module(target).compute(1) == 12
    mgr.revert_all()


def test_not_applicable_raised_by_apply_rolls_back_what_it_changed(target, monkeypatch):
    monkeypatch.delenv("CCRT_TEST_SWITCH", raising=False)

    def apply(ctx):
        ctx.setenv("CCRT_TEST_SWITCH", "1")
        ctx.wrap(sys.modules[target], "compute", lambda w, i, a, k: w(*a, **k) + 10)
        require_cuda_device(["x", "--device", "xpu"])

    mgr = PatchManager([make_patch(target, apply=apply)])
    mgr.activate(ON, Settings.load(env={}))
    mod = importlib.import_module(target)
    rec = mgr.records["test.compute"]
    assert (rec.status, rec.reason) == ("not applicable", "device xpu")
    assert mod.compute(1) == 2 and "CCRT_TEST_SWITCH" not in os.environ


def test_sglang_patches_need_a_cuda_device_by_default():
    from cc_runtime.patches import all_patches

    by_name = {p.name: p for p in all_patches()}
    assert all(p.cuda_only() for p in by_name.values() if p.target == "sglang")
    assert by_name["emulation"].cuda_only()
    assert not by_name["triton.autotune_timer"].cuda_only() if "triton.autotune_timer" in by_name else True
