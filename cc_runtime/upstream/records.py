"""What ``cc-runtime upstream check`` found, remembered so ``patches`` and ``doctor`` can warn.

One JSON file in the user's cache folder (``$XDG_CACHE_HOME/cc_runtime``, else ``~/.cache/cc_runtime``):
staged PR -> distribution version -> outcome. A runtime patch whose staged PR was found
``upstream-covered`` in some release is stale there: it should get a ``fixed_in``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cc_runtime" / "upstream-check.json"


def load() -> dict[str, Any]:
    try:
        data = json.loads(path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember(results: list[dict[str, Any]]) -> None:
    """Store each result that names an installed version (a missing install teaches nothing)."""
    data = load()
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    for r in results:
        if r.get("installed"):
            data.setdefault(r["name"], {})[r["installed"]] = {"result": r["result"], "checked": stamp}
    try:
        path().parent.mkdir(parents=True, exist_ok=True)
        tmp = path().with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path())
    except OSError:
        pass  # a read-only home must not fail the check


def covered_versions(pr_name: str) -> list[str]:
    """Versions in which the check found this staged PR ``upstream-covered``."""
    return sorted(v for v, r in load().get(pr_name, {}).items()
                  if isinstance(r, dict) and r.get("result") == "upstream-covered")


def stale_note(patch_name: str) -> str | None:
    """For a runtime patch: 'upstream-covered in <dist> <versions>' when a check found it so, else None."""
    from .staged import for_patch

    pr = for_patch(patch_name)
    if pr is None:
        return None
    versions = covered_versions(pr.name)
    if not versions:
        return None
    return (f"stale: upstream-covered in {pr.project.dist} {', '.join(versions)} "
            f"(cc-runtime upstream check {pr.name}); give the patch fixed_in")
