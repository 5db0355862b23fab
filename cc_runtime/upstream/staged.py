"""The staged PRs as data: :class:`StagedPR` (one ``prs/<name>/`` folder) and the upstream projects.

A PR's source change is ``change.patch``, made with ``diff -u`` against the installed release's files
laid out at the repository's paths; its new files (tests) live under ``new/`` at their repository
paths and are added to the diff when it is exported or checked, so the test files are not kept twice.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PRS_DIR = Path(__file__).with_name("prs")


@dataclass(frozen=True)
class Project:
    """An upstream project: its distribution, where the package sits in its repository, its PR template."""

    name: str
    dist: str
    #: the repository folder that holds the importable package (the wheel is built from it)
    prefix: str
    repo: str
    tag: str
    #: the sections of upstream's PR template, in order (empty: upstream has none)
    template: tuple[str, ...] = ()
    checklist: tuple[str, ...] = ()


PROJECTS: dict[str, Project] = {
    "sglang": Project(
        "sglang", "sglang", "python/", "https://github.com/sgl-project/sglang", "v{version}",
        template=("Motivation", "Modifications", "Accuracy Tests", "Benchmarking and Profiling", "Checklist"),
        checklist=("Format your code according to the pre-commit hooks.",
                   "Add unit tests for the change.",
                   "Update documentation as needed.",
                   "Provide accuracy and speed benchmark results.",
                   "Follow the SGLang code style guidance.")),
    "flashinfer": Project(
        "flashinfer", "flashinfer-python", "", "https://github.com/flashinfer-ai/flashinfer", "v{version}",
        template=("Description", "Related Issues", "Pull Request Checklist", "Reviewer Notes"),
        checklist=("I have installed pre-commit and run `pre-commit run --all-files`.",
                   "Tests have been added or updated as needed.",
                   "All tests are passing (`unittest`, etc.).")),
    "triton": Project(
        "triton", "triton", "python/", "https://github.com/triton-lang/triton", "v{version}",
        checklist=("I am not making a trivial change, such as fixing a typo in a comment.",
                   "I have written a PR description following these rules: "
                   "https://cbea.ms/git-commit/#why-not-how.",
                   "I have added tests (`/python/test` for end-to-end tests).",
                   "I have not added any `lit` tests.")),
    "pytorch": Project("pytorch", "torch", "", "https://github.com/pytorch/pytorch", "v{version}"),
}


@dataclass(frozen=True)
class StagedPR:
    name: str
    path: Path
    title: str
    project: Project
    base_version: str
    runtime_patch: str | None
    status: str
    change: str
    sources: tuple[str, ...]
    related: tuple[str, ...]
    evidence: tuple[dict[str, Any], ...]
    also_covers: tuple[str, ...] = ()
    upstream_pr: str = ""
    notes: str = ""
    #: why the runtime-patch comparison cannot run on this kind of machine (empty: it runs)
    runtime_check_skip: str = ""
    runtime_env: dict[str, str] = field(default_factory=dict)

    @property
    def patch_file(self) -> Path:
        return self.path / "change.patch"

    def source_diff(self) -> str:
        return self.patch_file.read_text()

    def changed_files(self) -> list[str]:
        """Repository paths the source change modifies (from its ``+++ b/`` lines)."""
        return re.findall(r"^\+\+\+ b/(\S+)", self.source_diff(), flags=re.M)

    def new_files(self) -> list[str]:
        new = self.path / "new"
        return sorted(p.relative_to(new).as_posix() for p in new.rglob("*") if p.is_file()
                      and "__pycache__" not in p.parts) if new.is_dir() else []

    def test_files(self) -> list[str]:
        return [f for f in self.new_files() if re.search(r"(^|/)test_[^/]*\.py$", f)]

    @property
    def files(self) -> list[str]:
        return self.changed_files() + self.new_files()

    def full_diff(self) -> str:
        """The source change followed by the new files as ``/dev/null`` diffs: the whole PR."""
        parts = [self.source_diff().rstrip("\n") + "\n"]
        for rel in self.new_files():
            text = (self.path / "new" / rel).read_text()
            lines = text.splitlines(keepends=True)
            body = "".join(difflib.unified_diff([], lines, "/dev/null", f"b/{rel}", n=0))
            parts.append(f"diff --git a/{rel} b/{rel}\nnew file mode 100644\n{body}")
        return "".join(parts)

    def lines_changed(self) -> tuple[int, int]:
        added = removed = 0
        for line in self.full_diff().splitlines():
            if line.startswith("+") and not line.startswith("+++"):
                added += 1
            elif line.startswith("-") and not line.startswith("---"):
                removed += 1
        return added, removed

    def as_dict(self) -> dict[str, Any]:
        added, removed = self.lines_changed()
        return {
            "name": self.name, "title": self.title, "project": self.project.name,
            "distribution": self.project.dist, "base_version": self.base_version,
            "files": self.files, "tests": self.test_files(), "lines_added": added,
            "lines_removed": removed, "runtime_patch": self.runtime_patch,
            "also_covers": list(self.also_covers), "status": self.status,
            "upstream_pr": self.upstream_pr or None,
        }


def _load(folder: Path) -> StagedPR:
    meta = tomllib.loads((folder / "meta.toml").read_text())
    project = PROJECTS[meta["project"]]
    return StagedPR(
        name=folder.name, path=folder, title=meta["title"], project=project,
        base_version=meta["base_version"], runtime_patch=meta.get("runtime_patch") or None,
        status=meta.get("status", "staged"), change=meta["change"].strip(),
        sources=tuple(meta.get("sources", ())), related=tuple(meta.get("related", ())),
        evidence=tuple(meta.get("evidence", ())), also_covers=tuple(meta.get("also_covers", ())),
        upstream_pr=meta.get("upstream_pr", ""), notes=meta.get("notes", "").strip(),
        runtime_env=dict(meta.get("runtime_env", {})),
        runtime_check_skip=" ".join(meta.get("runtime_check_skip", "").split()),
    )


def all_prs() -> list[StagedPR]:
    return [_load(d) for d in sorted(PRS_DIR.iterdir()) if (d / "meta.toml").is_file()]


def get(name: str) -> StagedPR:
    for pr in all_prs():
        if pr.name == name:
            return pr
    known = [p.name for p in all_prs()]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    raise KeyError(f"no staged PR named {name!r}" + (f"; did you mean {', '.join(close)}?" if close
                                                     else f"; staged: {', '.join(known)}"))


def for_patch(patch_name: str) -> StagedPR | None:
    """The staged PR that mirrors a runtime patch (its ``runtime_patch`` or one it ``also_covers``)."""
    for pr in all_prs():
        if patch_name == pr.runtime_patch or patch_name in pr.also_covers:
            return pr
    return None


#: Runtime patches with no staged PR, and why (``cc-runtime patches`` shows it).
NOT_STAGED: dict[str, str] = {
    "emulation": "cc_runtime's own CC emulator: nothing upstream to change",
    "sglang.cc_env": "exports cc_runtime's CC decision to SGLang's own switch; SGLang already has it",
    "flashinfer.cc_env": "exports cc_runtime's CC decision to FlashInfer's own switches; FlashInfer "
                         "already has them",
    "flashinfer.autotuner_timer_legacy": "fixed upstream in flashinfer-python 0.6.16 (PR 3870); only "
                                         "for older pinned releases",
    "flashinfer.globaltimer_kernel": "supplies cc_runtime's nvcc-free stamp kernel (PTX/Triton) to "
                                     "FlashInfer's JIT-built one; an upstream change needs FlashInfer's "
                                     "AOT build, not a Python diff",
    "sglang.readback_worker": "SGLang 0.5.12 only: SGLang 0.5.23 ships its own AsyncD2HCopyWorker",
    "sglang.readback_snapshot_worker": "SGLang 0.5.12 only (the worker it needs is upstream from 0.5.23)",
    "sglang.prefill_graphs_0_5_12": "SGLang 0.5.12 only: later releases replaced the piecewise runner",
    "sglang.prefill_graphs_0_5_23": "a deployment policy (capture sizes under CC), not a code fix",
    "sglang.hicache_host_pool_inline": "the same fix as sglang-hicache-host-pool-cc, for releases whose pool "
                                       "allocates inline; staged once, against 0.5.23",
    "sglang.allreduce_fusion_ipc": "experimental (opt-in); upstream work is SGLang PR 31447 (open)",
    "sglang.h2d_staging": "SGLang 0.5.12 - 0.5.22: defers the batch builders' copies at run time; the "
                          "explicit form (async_h2d on a side stream) is staged against 0.5.23 as "
                          "sglang-h2d-staging",
    "sglang.d2h_worker_blocking_waits": "not staged yet: the fix (blocking-sync events in 0.5.23's "
                                        "AsyncD2HCopyWorker) is a few lines, but its evidence (the spin it "
                                        "stops) needs a GPU run first",
    "sglang.loading": "not staged yet: a new weight-loading path (chunked pinned ring + D2D) is a feature "
                      "PR for SGLang's model loader, to be proposed with GPU measurements",
}
