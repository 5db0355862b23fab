"""``cc-runtime upstream check``: prove each staged PR on the real upstream source.

Against the pinned release (installed, same version): the diff applies exactly (an offset or fuzz is a
failure); the PR's tests fail on the pristine files and pass on the patched ones with cc_runtime never
imported (the test process refuses the import and reports any that got in); and the same tests pass on
the pristine release with cc_runtime's runtime patch active. Against another installed release: the PR
``applies``, ``conflicts`` or is ``upstream-covered`` (the change reverse-applies, or the tests already
pass on the pristine files). Results are remembered (:mod:`.records`) so ``cc-runtime patches`` and
``doctor`` can say when a runtime patch has become stale.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import Installed, LayoutError, apply, find_installed, lay_out, same_release, try_apply
from .staged import StagedPR

PLUGIN = Path(__file__).with_name("_check_plugin.py")
TEST_TIMEOUT_S = 600
#: the environment a staged test runs in: no GPU, no network, nothing of cc_runtime's inherited
_CHILD_ENV = {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
              "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass
class Options:
    source: str | None = None
    python: str | None = None
    pythonpath: list[str] = field(default_factory=list)


@dataclass
class Result:
    name: str
    project: str
    base_version: str
    installed: str | None
    outcome: str  # proven | applies | conflicts | upstream-covered | not installed | FAILED
    steps: list[str] = field(default_factory=list)
    failed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "project": self.project, "base_version": self.base_version,
                "installed": self.installed, "result": self.outcome, "steps": self.steps,
                "failed": self.failed}


def _python_for(opts: Options) -> str:
    if opts.python:
        return opts.python
    if opts.source:
        # <venv>/lib/pythonX.Y/site-packages -> <venv>/bin/python
        site = Path(opts.source).resolve()
        if site.name == "site-packages":
            cand = site.parents[2] / "bin" / "python"
            if cand.exists():
                return str(cand)
    return sys.executable


def _run_tests(pr: StagedPR, repo: Path, installed: Installed, mode: str, opts: Options) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="cc-upstream-plugin-"))
    try:
        shutil.copy(PLUGIN, work / "_cc_upstream_check.py")
        config: dict[str, Any] = {"mode": mode, "result": str(work / "result.json")}
        env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_") and k != "PYTHONPATH"}
        env.update(_CHILD_ENV)
        path = [str(work)]
        if opts.source and Path(opts.source).resolve().name != "site-packages":
            path.append(str(Path(opts.source).resolve()))  # a pip --target folder is not a site dir
        path += opts.pythonpath
        if mode == "patched":
            modules, packages = {}, {}
            for rel in pr.changed_files():
                name = installed.module_for(rel)
                if name:
                    modules[name] = str(repo / rel)
                    if rel.endswith("__init__.py"):
                        packages[name] = [str(installed.file_for(rel).parent)]
            config.update(modules=modules, packages=packages)
        elif mode == "runtime":
            patches = [p for p in (pr.runtime_patch, *pr.also_covers) if p]
            config["runtime_patches"] = patches
            path.insert(1, str(Path(__file__).resolve().parents[2]))  # this cc_runtime, first
            env.update({"CC_RUNTIME_CC": "1", "CC_RUNTIME_PATCHES": ",".join(patches)})
            env.update(pr.runtime_env)
        env["PYTHONPATH"] = os.pathsep.join(path)
        env["CC_UPSTREAM_CHECK_CONFIG"] = json.dumps(config)
        cmd = [_python_for(opts), "-m", "pytest", "-q", "-p", "_cc_upstream_check", "-p", "no:cacheprovider",
               "--rootdir", str(repo), "-o", "addopts=", *pr.test_files()]
        try:
            proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=TEST_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"mode": mode, "exitstatus": -1, "output": f"timed out after {TEST_TIMEOUT_S} s"}
        result_file = work / "result.json"
        result: dict[str, Any] = json.loads(result_file.read_text()) if result_file.exists() else {
            "mode": mode, "exitstatus": proc.returncode}
        result["output"] = (proc.stdout + proc.stderr)[-3000:]
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _counts(r: dict[str, Any]) -> str:
    return ", ".join(f"{r.get(k, 0)} {k}" for k in ("passed", "failed", "errors", "skipped") if r.get(k))


def _prove(pr: StagedPR, repo: Path, installed: Installed, opts: Options, res: Result) -> None:
    exact = try_apply(repo, pr.full_diff())
    if not exact.exact:
        res.steps.append(f"diff does not apply exactly: {exact.detail}")
        res.failed = True
        return
    res.steps.append("diff applies exactly (no offset, no fuzz)")
    for rel in pr.new_files():  # the tests, on the pristine release
        dst = repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pr.path / "new" / rel, dst)

    def verdict(r: dict[str, Any], want: str) -> bool:
        if r.get("cc_runtime_imported") and r["mode"] != "runtime":
            res.steps.append(f"{r['mode']}: cc_runtime was imported ({', '.join(r['cc_runtime_imported'])})")
            return False
        if want == "fail":
            ok = r.get("exitstatus") == 1 and r.get("failed", 0) >= 1 and not r.get("errors")
        else:
            ok = r.get("exitstatus") == 0 and r.get("passed", 0) >= 1
        if r["mode"] == "runtime":
            bad = {n: s for n, s in r.get("patches", {}).items() if s != "applied"}
            if bad:
                res.steps.append(f"runtime: patch not applied: {bad}")
                ok = False
        label = {"pristine": "tests fail on the pristine release",
                 "patched": "tests pass on the patched tree, cc_runtime never imported",
                 "runtime": "tests pass on the pristine release with the runtime patch active"}[r["mode"]]
        res.steps.append(f"{label}: {'yes' if ok else 'NO'} ({_counts(r) or 'exit ' + str(r.get('exitstatus'))})")
        if not ok:
            res.steps.append("  " + r.get("output", "").strip().replace("\n", "\n  ")[-1500:])
        return ok

    ok = verdict(_run_tests(pr, repo, installed, "pristine", opts), "fail")
    if pr.runtime_patch and pr.runtime_check_skip:
        res.steps.append(f"runtime patch comparison not run here: {pr.runtime_check_skip}")
    elif pr.runtime_patch:
        ok = verdict(_run_tests(pr, repo, installed, "runtime", opts), "pass") and ok
    for rel in pr.new_files():
        (repo / rel).unlink()
    apply(repo, pr.full_diff())
    ok = verdict(_run_tests(pr, repo, installed, "patched", opts), "pass") and ok
    res.outcome = "proven" if ok else "FAILED"
    res.failed = not ok


def _compare(pr: StagedPR, repo: Path, installed: Installed, opts: Options, res: Result) -> None:
    forward = try_apply(repo, pr.full_diff())
    if try_apply(repo, pr.source_diff(), reverse=True).ok:
        res.outcome = "upstream-covered"
        res.steps.append("the change reverse-applies: this release already has it")
        return
    if forward.ok:
        res.outcome = "applies"
        res.steps.append("applies" + (f" ({forward.detail})" if not forward.exact else " exactly"))
    else:
        res.outcome = "conflicts"
        res.steps.append(f"does not apply: {forward.detail}")
    if pr.test_files():
        for rel in pr.new_files():
            dst = repo / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(pr.path / "new" / rel, dst)
        r = _run_tests(pr, repo, installed, "pristine", opts)
        if r.get("exitstatus") == 0 and r.get("passed", 0) >= 1 and not r.get("cc_runtime_imported"):
            res.outcome = "upstream-covered"
            res.steps.append(f"the staged tests already pass on this release ({_counts(r)})")
        else:
            res.steps.append(f"the staged tests do not pass on this release ({_counts(r) or 'exit ' + str(r.get('exitstatus'))})")


def check(pr: StagedPR, opts: Options) -> Result:
    installed = find_installed(pr.project, opts.source)
    res = Result(pr.name, pr.project.name, pr.base_version, installed.version if installed else None,
                 "not installed")
    if installed is None:
        res.steps.append(f"{pr.project.dist} is not installed {'in ' + opts.source if opts.source else 'here'}: "
                         "skipped")
        return res
    repo = Path(tempfile.mkdtemp(prefix=f"cc-upstream-{pr.name}-"))
    try:
        try:
            lay_out(installed, pr.changed_files(), repo)
        except LayoutError as exc:
            res.outcome, res.failed = "conflicts", same_release(installed.version, pr.base_version)
            res.steps.append(str(exc))
            return res
        if same_release(installed.version, pr.base_version):
            _prove(pr, repo, installed, opts, res)
        else:
            _compare(pr, repo, installed, opts, res)
    except LayoutError as exc:
        res.outcome, res.failed = "FAILED", True
        res.steps.append(str(exc))
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    return res
