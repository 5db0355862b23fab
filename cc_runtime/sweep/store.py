"""Raw sweep results: one JSON line per cell attempt, appended and flushed as soon as it is known.

A line is never rewritten, so a crash (of the server, the client or the sweep) loses at most the cell
in flight. Resume reads the file back: a cell counts as finished when a line with its key has status
``ok``; a failed cell is tried again on the next run, and the report uses each key's latest line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

SCHEMA = "cc_runtime.sweep/1"
RESULTS_FILE = "results.jsonl"


def fingerprint(config: Mapping[str, Any]) -> str:
    """A short stable hash of what makes two runs of a cell the same measurement."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cell_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return (record.get("arm"), record.get("isl"), record.get("osl"), record.get("concurrency"),
            record.get("config"))


def read_jsonl(path: str) -> tuple[list[dict[str, Any]], int]:
    """(records, number of unreadable lines). A truncated last line (a killed sweep) is skipped."""
    records: list[dict[str, Any]] = []
    bad = 0
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(rec, dict) and rec.get("schema") == SCHEMA:
                    records.append(rec)
                else:
                    bad += 1
    except FileNotFoundError:
        pass
    return records, bad


class ResultStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self.records, self.unreadable = read_jsonl(path)

    def finished(self, key: tuple[Any, ...]) -> bool:
        return any(r.get("status") == "ok" and cell_key(r) == key for r in self.records)

    def append(self, record: dict[str, Any]) -> None:
        record = {"schema": SCHEMA, **record}
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)


def latest_per_cell(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per cell key: the last ``ok`` one, else the last one (a failure, with its reason)."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in records:
        key = cell_key(rec)
        prev = best.get(key)
        if prev is None or rec.get("status") == "ok" or prev.get("status") != "ok":
            best[key] = dict(rec)
    return list(best.values())
