"""cc_runtime must be active in every Python process SGLang spawns. These tests start real child
processes (subprocess and multiprocessing "spawn", as sglang.launch_server does) and ask them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cc_runtime.cli import launch_env

REPO = Path(__file__).resolve().parents[2]

REPORT = textwrap.dedent("""
    import json, sys
    active = "cc_runtime" in sys.modules
    out = {"imported": active}
    if active:
        import cc_runtime
        st = cc_runtime.cc_state()
        out.update(enabled=st.enabled, source=st.source, label=st.label,
                   patches={p["name"]: p["status"] for p in cc_runtime.status()["patches"]})
    print("REPORT" + json.dumps(out))
""")


def _report(stdout: str) -> dict:
    line = [ln for ln in stdout.splitlines() if ln.startswith("REPORT")][-1]
    return json.loads(line[len("REPORT"):])


def _run(code: str, env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          **kw)


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    return env


@pytest.mark.timeout(180)
def test_launch_env_activates_cc_runtime_in_a_child_that_never_imports_it():
    env = launch_env(_clean_env())
    env["CC_RUNTIME_CC"] = "1"
    r = _run(REPORT, env)
    assert r.returncode == 0, r.stderr
    rep = _report(r.stdout)
    assert rep["imported"] and rep["enabled"] and rep["source"] == "env"


@pytest.mark.timeout(240)
def test_patches_apply_inside_the_child_when_it_imports_the_target():
    """The child never imports cc_runtime; importing torch inductor's benchmarker there must patch it."""
    env = launch_env(_clean_env())
    env["CC_RUNTIME_CC"] = "1"
    code = ("import torch._inductor.runtime.benchmarking as b, json, sys\n"
            "import cc_runtime\n"
            "st = {p['name']: p['status'] for p in cc_runtime.status()['patches']}\n"
            "print('REPORT' + json.dumps({'inductor': st['inductor.benchmarker_timer']}))\n")
    r = _run(code, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _report(r.stdout)["inductor"] == "applied"


@pytest.mark.timeout(180)
def test_without_the_bootstrap_variable_children_are_untouched():
    env = _clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "cc_runtime" / "_launch"), str(REPO)])
    r = _run(REPORT, env)
    assert r.returncode == 0, r.stderr
    assert _report(r.stdout) == {"imported": False}


@pytest.mark.timeout(180)
def test_multiprocessing_spawn_grandchildren_inherit_activation(tmp_path):
    script = tmp_path / "spawner.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing as mp

        def child(q):
            import sys
            q.put(("cc_runtime" in sys.modules, __import__("cc_runtime").cc_state().label))

        if __name__ == "__main__":
            import cc_runtime  # the launching process opts in, exactly like a user before SGLang
            cc_runtime.activate(emulate="h100")
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            p = ctx.Process(target=child, args=(q,))
            p.start()
            print("CHILD", q.get(timeout=60))
            p.join(60)
    """))
    env = _clean_env()
    # The child must find cc_runtime the way the parent did, but the .pth is not installed in this
    # (editable / source) environment: the launch shim stands in for it.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "cc_runtime" / "_launch"), str(REPO)])
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stderr
    assert "CHILD (True, 'emulated:h100')" in r.stdout


def _site_with_pth(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(REPO / "cc_runtime_bootstrap.pth", site / "cc_runtime_bootstrap.pth")
    return site


@pytest.mark.timeout(180)
def test_pth_bootstrap_is_gated_idempotent_and_never_raises(tmp_path):
    """Runs the shipped .pth through site.addsitedir, the same code path as interpreter start-up."""
    site = _site_with_pth(tmp_path)
    code = (f"import site; site.addsitedir({str(site)!r}); site.addsitedir({str(site)!r})\n" + REPORT)
    env = _clean_env()
    env["PYTHONPATH"] = str(REPO)
    off = _run(code, env)
    assert off.returncode == 0 and _report(off.stdout) == {"imported": False}

    env["CC_RUNTIME_BOOTSTRAP"] = "1"
    env["CC_RUNTIME_CC"] = "1"
    on = _run(code, env)
    assert on.returncode == 0, on.stderr
    assert _report(on.stdout)["enabled"] is True

    env["CC_RUNTIME_CC"] = "sometimes"  # invalid: logged, process untouched, never a crash
    bad = _run(code, env)
    assert bad.returncode == 0, bad.stderr
    assert _report(bad.stdout)["enabled"] is False
    assert "CC_RUNTIME_CC='sometimes' is not valid" in bad.stderr


@pytest.mark.timeout(180)
def test_pth_bootstrap_survives_a_broken_cc_runtime(tmp_path):
    site = _site_with_pth(tmp_path)
    broken = tmp_path / "broken"
    (broken / "cc_runtime").mkdir(parents=True)
    (broken / "cc_runtime" / "__init__.py").write_text("raise ImportError('half-installed')\n")
    env = _clean_env()
    env.update(CC_RUNTIME_BOOTSTRAP="1", PYTHONPATH=os.pathsep.join([str(broken), str(REPO)]))
    # cwd away from the repository: `-c` puts the cwd first on sys.path, which would find the real package
    r = _run(f"import site; site.addsitedir({str(site)!r}); print('alive')", env, cwd=tmp_path)
    assert r.returncode == 0 and "alive" in r.stdout and "Traceback" not in r.stderr
    assert "half-installed" in r.stderr  # one line saying this process runs without cc_runtime


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheel_ships_bootstrap_files_and_kernels_inside_the_package(tmp_path):
    pytest.importorskip("setuptools")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=280)
    if r.returncode != 0 and "No module named pip" in r.stderr:
        pytest.skip("pip not available in this interpreter")
    assert r.returncode == 0, r.stderr
    import zipfile

    (wheel,) = tmp_path.glob("cc_runtime-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cc_runtime_bootstrap.pth" in names and "cc_runtime.start" in names
    assert "cc_runtime/kernels/__init__.py" in names
    assert not any(n.startswith("kernels/") for n in names), "kernels/ must not install as a top-level module"
    eps = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[sglang.srt.plugins]" in eps and "cc_runtime.integrations.sglang_plugin:load" in eps


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_editable_install_ships_the_bootstrap_and_children_activate(tmp_path):
    """The README's `pip install -e .` (PEP 660) must put the .pth into site-packages too."""
    venv = tmp_path / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"cannot create a venv here: {r.stderr[-300:]}")
    py = venv / "bin" / "python"
    # Build isolation as a user gets it: pip fetches the build backend from the configured index.
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "-e", str(REPO)],
                       capture_output=True, text=True, timeout=500)
    if r.returncode != 0 and ("No matching distribution" in r.stderr or "Could not find a version" in r.stderr):
        pytest.skip(f"no package index for the build backend: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, timeout=60).stdout.strip()
    assert (Path(site) / "cc_runtime_bootstrap.pth").is_file()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_") and k != "PYTHONPATH"}
    # CC forced off (this venv has no dependencies to patch with); the gate set by hand, as `cc-runtime
    # launch` sets it (off CC `import cc_runtime` does not set it: nothing to patch in children).
    env.update(CC_RUNTIME_CC="0", CC_RUNTIME_BOOTSTRAP="1")
    code = ("import subprocess, sys, cc_runtime\n"
            "print(subprocess.run([sys.executable, '-c', 'import sys; print(\"cc_runtime\" in sys.modules)'],"
            " capture_output=True, text=True).stdout.strip())")
    r = subprocess.run([str(py), "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.timeout(180)
def test_pth_bootstrap_in_strict_mode_exits_when_activation_fails(tmp_path):
    """A strict deployment must not run unpatched: the .pth turns a strict failure into exit 1, one
    report line; any other import failure of cc_runtime leaves the process running."""
    site = _site_with_pth(tmp_path)
    fake = tmp_path / "fake"
    (fake / "cc_runtime").mkdir(parents=True)
    (fake / "cc_runtime" / "__init__.py").write_text(
        "import sys\nprint('cc_runtime: strict mode: activation failed, everything rolled back', file=sys.stderr)\n"
        "class StrictModeError(RuntimeError):\n    cc_runtime_strict = True\n"
        "raise StrictModeError('patch x failed')\n")
    env = _clean_env()
    env.update(CC_RUNTIME_BOOTSTRAP="1", PYTHONPATH=os.pathsep.join([str(fake), str(REPO)]))
    # -S: the interpreter's own site-packages may hold an installed copy of the .pth; only ours runs.
    r = subprocess.run([sys.executable, "-S", "-c", f"import site; site.addsitedir({str(site)!r}); print('alive')"],
                       env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1 and "alive" not in r.stdout
    assert r.stderr.strip().splitlines() == ["cc_runtime: strict mode: activation failed, everything rolled back"]
    # At real start-up (the .pth read by site before any user code), the same: one line, exit 1, no
    # "Fatal Python error" from an exception escaping site. Needs this interpreter's installed .pth
    # (the nox venvs have it: `pip install -e .` ships it).
    import sysconfig

    if not (Path(sysconfig.get_paths()["purelib"]) / "cc_runtime_bootstrap.pth").is_file():
        return
    r = subprocess.run([sys.executable, "-c", "print('alive')"], env={**env, "PYTHONPATH": os.pathsep.join(
        [str(fake), str(REPO), str(site)])}, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1 and "alive" not in r.stdout, r.stderr
    assert "Fatal Python error" not in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.timeout(300)
def test_strict_failure_at_import_of_the_target_in_a_bootstrapped_child(tmp_path):
    """A patch that fails when its target is imported: strict fails that child's import (with the
    reason), non-strict reports the patch as failed, warns once on stderr, and the child runs on.

    The failure needs a stand-in: a Triton 3.6.0 whose `triton.testing` refuses every change (the real
    Triton takes the patch cleanly, see tests/timer). It shadows the real one only in these children."""
    fake = tmp_path / "fake"
    (fake / "triton").mkdir(parents=True)
    (fake / "triton" / "__init__.py").write_text("")
    (fake / "triton" / "testing.py").write_text(
        "import sys, types\n"
        "def do_bench(fn, *args, **kwargs):\n    return 0.0\n"
        "def do_bench_cudagraph(fn, *args, **kwargs):\n    return 0.0\n"
        "class _ReadOnly(types.ModuleType):\n"
        "    def __setattr__(self, name, value):\n        raise AttributeError(f'{name} is read-only here')\n"
        "sys.modules[__name__].__class__ = _ReadOnly\n")
    (fake / "triton-3.6.0.dist-info").mkdir()
    (fake / "triton-3.6.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: triton\nVersion: 3.6.0\n")
    code = ("import triton.testing, cc_runtime\n"
            "print('TRITON', {p['name']: p['status'] for p in cc_runtime.status()['patches']}['triton.autotune_timer'])\n")
    env = launch_env(_clean_env())
    env["CC_RUNTIME_CC"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(fake), env["PYTHONPATH"]])
    r = _run(code, env)
    assert r.returncode == 0 and "TRITON failed" in r.stdout, r.stderr[-2000:]
    warned = [ln for ln in r.stderr.splitlines() if "triton.autotune_timer" in ln]
    assert len(warned) == 1 and warned[0].startswith("WARNING cc_runtime patch triton.autotune_timer: failed")
    env["CC_RUNTIME_STRICT"] = "1"
    r = _run(code, env)
    assert r.returncode != 0 and "PatchError" in r.stderr and "triton.autotune_timer failed" in r.stderr
