"""``cc-runtime upstream export``: a staged PR as ``git format-patch`` output plus ``PR.md``.

The mail is written directly (no upstream clone is needed): ``git am`` applies it onto a clone of the
upstream repository at the release tag. Authorship is ``--author`` or the user's git config.
"""

from __future__ import annotations

import email.utils
import re
import subprocess
from pathlib import Path

from .describe import render
from .staged import StagedPR


class ExportError(RuntimeError):
    pass


def git_author() -> str:
    def get(key: str) -> str:
        try:
            proc = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True)
        except OSError:
            return ""
        return proc.stdout.strip()

    name, mail = get("user.name"), get("user.email")
    if not (name and mail):
        raise ExportError("no author: pass --author 'Name <email>' or set git config user.name and user.email")
    return f"{name} <{mail}>"


def _with_git_headers(diff: str) -> str:
    """``diff -u`` output gains the ``diff --git`` line git writes before each file."""
    out = []
    lines = diff.splitlines(keepends=True)
    for i, line in enumerate(lines):
        m = re.match(r"^--- a/(\S+)", line)
        if m and (i == 0 or not lines[i - 1].startswith("diff --git")) and i + 1 < len(lines) \
                and lines[i + 1].startswith("+++ b/"):
            out.append(f"diff --git a/{m.group(1)} b/{m.group(1)}\n")
        out.append(line)
    return "".join(out)


def _diffstat(diff: str) -> str:
    stats: dict[str, list[int]] = {}
    current = None
    for line in diff.splitlines():
        m = re.match(r"^\+\+\+ b/(\S+)", line)
        if m:
            current = m.group(1)
            stats[current] = [0, 0]
        elif current and line.startswith("+") and not line.startswith("+++"):
            stats[current][0] += 1
        elif current and line.startswith("-") and not line.startswith("---"):
            stats[current][1] += 1
    width = max((len(f) for f in stats), default=0)
    rows = [f" {f:<{width}} | {a + r:>4} {'+' * min(a, 40)}{'-' * min(r, 40)}" for f, (a, r) in stats.items()]
    added, removed = sum(a for a, _ in stats.values()), sum(r for _, r in stats.values())
    rows.append(f" {len(stats)} files changed, {added} insertions(+), {removed} deletions(-)")
    return "\n".join(rows)


def format_patch(pr: StagedPR, author: str) -> str:
    name, addr = email.utils.parseaddr(author)
    if not (name and addr and "@" in addr):
        raise ExportError(f"author {author!r} is not 'Name <email>'")
    diff = _with_git_headers(pr.full_diff())
    body = pr.change.strip()
    return (f"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            f"From: {email.utils.formataddr((name, addr))}\n"
            f"Date: {email.utils.formatdate(localtime=False)}\n"
            f"Subject: [PATCH] {pr.title}\n\n{body}\n---\n{_diffstat(diff)}\n\n{diff}"
            f"-- \ncc-runtime upstream export ({pr.project.dist} {pr.base_version})\n\n")


def export(pr: StagedPR, out: Path, author: str | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", pr.title).strip("-")[:52].rstrip("-")
    patch = out / f"0001-{slug}.patch"
    patch.write_text(format_patch(pr, author or git_author()))
    md = out / "PR.md"
    md.write_text(render(pr))
    return [patch, md]
