"""Runtime patch <-> staged PR: what ``cc-runtime patches`` and ``doctor`` add to each patch row."""

from __future__ import annotations

from typing import Any


def annotate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row (a patch record's ``as_dict``) gains ``staged_pr`` (the PR's name, or None),
    ``not_staged`` (why there is none) and ``stale`` (set when ``cc-runtime upstream check`` found the
    fix upstream-covered in an installed release). Never raises: a broken PR folder must not hide the
    patch table."""
    try:
        from . import records
        from .staged import NOT_STAGED, for_patch

        for row in rows:
            name = str(row.get("name", ""))
            pr = for_patch(name)
            row["staged_pr"] = pr.name if pr else None
            row["not_staged"] = None if pr else NOT_STAGED.get(name, "no staged PR and no reason recorded")
            row["stale"] = records.stale_note(name)
    except Exception as exc:  # noqa: BLE001
        for row in rows:
            row.setdefault("staged_pr", None)
            row.setdefault("not_staged", f"staged PRs unreadable: {exc}")
            row.setdefault("stale", None)
    return rows
