"""The staged upstream PRs as data, their CLI, export, links to runtime patches and the check's guards.

CPU only and fast: nothing here imports an upstream library. The proofs on the real upstream source
(`cc-runtime upstream check`) run in the nox session ``upstream-prs``; ``test_export_applies_to_the_
installed_release`` (marked upstream) checks the exported mail against installed release files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cc_runtime.patch_names import PATCH_NAMES
from cc_runtime.upstream import check as check_mod
from cc_runtime.upstream import export, records
from cc_runtime.upstream.layout import ApplyResult
from cc_runtime.upstream.links import annotate
from cc_runtime.upstream.staged import NOT_STAGED, PROJECTS, all_prs, for_patch

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    full.update(PYTHONPATH=str(ROOT), CC_RUNTIME_CC="0", **(env or {}))
    return subprocess.run([sys.executable, "-m", "cc_runtime", *args], env=full, capture_output=True, text=True)


def test_list_json_has_the_result_format() -> None:
    out = cli("upstream", "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) >= 8 and len({r["project"] for r in rows}) >= 3
    for r in rows:
        for key in ("name", "project", "base_version", "files", "runtime_patch", "status"):
            assert key in r, (r["name"], key)
        assert r["tests"] and r["lines_added"] > 0 and r["status"] in ("staged", "sent", "merged")


@pytest.mark.parametrize("pr", all_prs(), ids=lambda p: p.name)
def test_each_pr_is_well_formed(pr) -> None:
    prefix = pr.project.prefix
    assert pr.changed_files() and all(f.startswith(prefix) for f in pr.changed_files()), pr.changed_files()
    assert pr.test_files(), "a staged PR carries its tests"
    assert re.findall(r"^--- a/(\S+)", pr.source_diff(), flags=re.M) == pr.changed_files()
    assert pr.runtime_patch in PATCH_NAMES
    for name in pr.also_covers:
        assert name in PATCH_NAMES
    staged_text = pr.source_diff() + "".join((pr.path / "new" / f).read_text() for f in pr.new_files())
    assert "cc_runtime" not in staged_text and "cc-runtime" not in staged_text, "no cc_runtime in staged code"
    for ev in pr.evidence:
        assert (ROOT / "benchmarks" / "results" / ev["result"]).is_file(), ev["result"]


def test_every_runtime_patch_has_a_staged_pr_or_a_reason() -> None:
    for name in PATCH_NAMES:
        assert (for_patch(name) is None) != (name not in NOT_STAGED), name
    assert set(NOT_STAGED) <= set(PATCH_NAMES)


def test_patches_command_links_each_patch() -> None:
    out = cli("patches", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["flashinfer.cc_detect"]["staged_pr"] == "flashinfer-cc-detect"
    assert rows["emulation"]["staged_pr"] is None and "emulator" in rows["emulation"]["not_staged"]
    assert "staged PR: triton-do-bench-globaltimer" in cli("patches").stdout


def test_stale_warning_for_an_upstream_covered_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    records.remember([{"name": "triton-do-bench-globaltimer", "installed": "3.9.1", "result": "upstream-covered"},
                      {"name": "flashinfer-cc-detect", "installed": "0.7.3", "result": "applies"}])
    rows = annotate([{"name": "triton.autotune_timer"}, {"name": "flashinfer.cc_detect"}])
    assert "upstream-covered in triton 3.9.1" in rows[0]["stale"]
    assert rows[1]["stale"] is None
    out = cli("patches", env={"XDG_CACHE_HOME": str(tmp_path)})
    assert "WARNING stale: upstream-covered in triton 3.9.1" in out.stdout


def test_export_writes_a_format_patch_and_pr_md(tmp_path) -> None:
    out = cli("upstream", "export", "flashinfer-cc-detect", "--out", str(tmp_path), "--author", "A B <a@b.c>")
    assert out.returncode == 0, out.stderr
    (patch,) = tmp_path.glob("0001-*.patch")
    text = patch.read_text()
    assert text.startswith("From 0000000000000000000000000000000000000000 ")
    assert "From: A B <a@b.c>" in text and "Subject: [PATCH] utils: " in text
    assert "diff --git a/flashinfer/utils.py b/flashinfer/utils.py" in text
    assert "new file mode 100644" in text and "+++ b/tests/utils/test_confidential_compute.py" in text
    md = (tmp_path / "PR.md").read_text()
    for section in ("Description", "Related Issues", "Pull Request Checklist", "Tests", "Sources:"):
        assert section in md


def test_sglang_pr_md_follows_sglang_template(tmp_path) -> None:
    assert cli("upstream", "export", "sglang-readback-coalesce", "--out", str(tmp_path),
               "--author", "A B <a@b.c>").returncode == 0
    md = (tmp_path / "PR.md").read_text()
    heads = re.findall(r"^## (.+)$", md, flags=re.M)
    assert heads[:5] == list(PROJECTS["sglang"].template)
    assert "simulated" in md and "readback.json" in md


def test_export_without_an_author_says_how_to_give_one(tmp_path) -> None:
    out = cli("upstream", "export", "flashinfer-cc-detect", "--out", str(tmp_path),
              env={"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path)})
    assert out.returncode == 2 and "--author" in out.stderr


def _plugin_run(tmp_path: Path, test_body: str, mode: str = "patched") -> dict:
    (tmp_path / "test_x.py").write_text(test_body)
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "_cc_upstream_check.py").write_text(check_mod.PLUGIN.read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "plug"), str(ROOT)])  # cc_runtime reachable
    env["CC_UPSTREAM_CHECK_CONFIG"] = json.dumps({"mode": mode, "result": str(tmp_path / "r.json")})
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "_cc_upstream_check", "-p", "no:cacheprovider",
                    "--rootdir", str(tmp_path), "test_x.py"], cwd=tmp_path, env=env, capture_output=True)
    return json.loads((tmp_path / "r.json").read_text())


def test_check_refuses_cc_runtime_in_a_staged_test(tmp_path) -> None:
    r = _plugin_run(tmp_path, "import cc_runtime\n\ndef test_ok():\n    pass\n")
    assert r["errors"] == 1 and r["passed"] == 0 and r["cc_runtime_imported"] == []


def test_check_reports_cc_runtime_modules_that_got_in(tmp_path) -> None:
    body = "import sys, types\nsys.modules['cc_runtime'] = types.ModuleType('cc_runtime')\n\ndef test_ok():\n    pass\n"
    r = _plugin_run(tmp_path, body)
    assert r["passed"] == 1 and r["cc_runtime_imported"] == ["cc_runtime"]


def test_a_proof_fails_when_the_patched_tests_fail(monkeypatch, tmp_path) -> None:
    """The verdict logic: a patched run that does not pass makes the PR FAILED (exit 1 in the CLI)."""
    pr = next(p for p in all_prs() if p.name == "triton-do-bench-globaltimer")
    canned = {"pristine": {"mode": "pristine", "exitstatus": 1, "failed": 2},
              "patched": {"mode": "patched", "exitstatus": 1, "failed": 1, "passed": 1, "output": "boom"},
              "runtime": {"mode": "runtime", "exitstatus": 0, "passed": 2, "patches": {pr.runtime_patch: "applied"}}}
    monkeypatch.setattr(check_mod, "_run_tests", lambda pr_, repo, inst, mode, opts: dict(canned[mode]))
    monkeypatch.setattr(check_mod, "try_apply", lambda *a, **k: ApplyResult(True, True, ""))
    monkeypatch.setattr(check_mod, "apply", lambda repo, diff: None)
    res = check_mod.Result(pr.name, "triton", pr.base_version, pr.base_version, "?")
    inst = check_mod.Installed(pr.project, pr.base_version, tmp_path)
    check_mod._prove(pr, tmp_path, inst, check_mod.Options(), res)
    assert res.failed and res.outcome == "FAILED"
    canned["patched"] = {"mode": "patched", "exitstatus": 0, "passed": 2}
    res = check_mod.Result(pr.name, "triton", pr.base_version, pr.base_version, "?")
    check_mod._prove(pr, tmp_path, inst, check_mod.Options(), res)
    assert not res.failed and res.outcome == "proven"


def test_format_patch_refuses_a_bad_author() -> None:
    with pytest.raises(export.ExportError):
        export.format_patch(all_prs()[0], "nobody")


@pytest.mark.upstream
@pytest.mark.timeout(300)
@pytest.mark.parametrize("pr", all_prs(), ids=lambda p: p.name)
def test_export_applies_to_the_installed_release(pr, tmp_path) -> None:
    """The exported mail, checked with plain git (not cc_runtime's apply helpers): ``git apply --check``
    on the installed release's files laid out at the repository's paths, then ``git am``."""
    from cc_runtime.upstream.layout import find_installed, same_release

    installed = find_installed(pr.project)
    if installed is None or not same_release(installed.version, pr.base_version):
        pytest.skip(f"needs {pr.project.dist} {pr.base_version} installed")
    repo = tmp_path / "repo"
    for rel in pr.changed_files():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(installed.file_for(rel).read_bytes())
    ident = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "release"]):
        subprocess.run(["git", *ident, *args], cwd=repo, check=True, capture_output=True)
    export.export(pr, tmp_path / "out", "A B <a@b.c>")
    (mail,) = (tmp_path / "out").glob("0001-*.patch")
    subprocess.run(["git", "apply", "--check", str(mail)], cwd=repo, check=True, capture_output=True)
    subprocess.run(["git", *ident, "am", "-q", str(mail)], cwd=repo, check=True, capture_output=True)
    for rel in pr.test_files():
        assert (repo / rel).is_file()
