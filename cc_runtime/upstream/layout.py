"""The installed release's files at their repository paths, in a scratch git repository.

Only the files a staged PR touches are laid out (copying all of torch to check one file would take
minutes); ``git apply`` needs nothing else. Everything here shells out to git, which must be on PATH.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .staged import Project

GIT_IDENTITY = ("-c", "user.name=cc-runtime upstream check", "-c", "user.email=cc-runtime@localhost",
                "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main")


class LayoutError(RuntimeError):
    pass


@dataclass(frozen=True)
class Installed:
    """One installed distribution of an upstream project: its version and its site directory."""

    project: Project
    version: str
    site: Path

    def file_for(self, repo_path: str) -> Path:
        if not repo_path.startswith(self.project.prefix):
            raise LayoutError(f"{repo_path} is not under {self.project.prefix or 'the repository root'}")
        return self.site / repo_path[len(self.project.prefix):]

    def module_for(self, repo_path: str) -> str | None:
        """``python/sglang/srt/x.py`` -> ``sglang.srt.x`` (``__init__.py`` -> the package)."""
        rel = repo_path[len(self.project.prefix):]
        if not rel.endswith(".py"):
            return None
        parts = rel[:-3].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        return ".".join(parts)


def find_installed(project: Project, source: str | None = None) -> Installed | None:
    """The project's distribution in ``source`` (a site-packages or ``pip --target`` folder), else on
    this interpreter's path; None when it is not installed there."""
    paths = [source] if source else None
    dists = list(importlib.metadata.distributions(name=project.dist, path=paths)) if paths else []
    if not paths:
        try:
            dists = [importlib.metadata.distribution(project.dist)]
        except importlib.metadata.PackageNotFoundError:
            dists = []
    if not dists:
        return None
    dist = dists[0]
    return Installed(project, dist.version, Path(str(dist.locate_file(""))))


def same_release(installed: str, base: str) -> bool:
    """``2.14.1+cpu`` is torch 2.14.1: a local build label does not change the source."""
    return installed.split("+", 1)[0] == base.split("+", 1)[0]


def git(repo: Path, *args: str, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=repo, input=input_text, text=True,
                          capture_output=True)
    if check and proc.returncode != 0:
        raise LayoutError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def lay_out(installed: Installed, repo_paths: list[str], repo: Path) -> None:
    """Copy the installed files to ``repo`` at their repository paths and commit them as the base."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q")
    for rel in repo_paths:
        src = installed.file_for(rel)
        if not src.is_file():
            raise LayoutError(f"{installed.project.dist} {installed.version} has no {rel} ({src})")
        dst = repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{installed.project.dist} {installed.version} (installed files)")


@dataclass(frozen=True)
class ApplyResult:
    ok: bool
    exact: bool
    detail: str


def try_apply(repo: Path, diff: str, *, reverse: bool = False) -> ApplyResult:
    """``git apply --check``: whether the diff applies, and whether every hunk landed where it says
    (an offset or fuzz counts as not exact)."""
    args = ["apply", "--check", "--verbose"] + (["--reverse"] if reverse else []) + ["-"]
    proc = git(repo, *args, input_text=diff, check=False)
    out = (proc.stdout + proc.stderr).strip()
    moved = [line for line in out.splitlines() if re.search(r"\b(offset|fuzz)\b", line)]
    errors = [line for line in out.splitlines()
              if line.startswith("error:") and "while searching for" not in line]
    ok = proc.returncode == 0
    detail = "; ".join(moved if ok else errors) or (out.splitlines()[-1] if out else "")
    return ApplyResult(ok, ok and not moved, detail)


def apply(repo: Path, diff: str) -> None:
    git(repo, "apply", "-", input_text=diff)
