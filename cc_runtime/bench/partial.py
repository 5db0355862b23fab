"""A benchmark's JSON on disk while it runs, so one killed at its time cap still leaves what it measured.

``cc-runtime bench NAME --json PATH`` writes PATH as soon as the benchmark starts (``complete: false``,
its environment, no summary) and rewrites it, atomically, each time the benchmark reports a measured
record (:func:`measured`) or finishes an item of its progress loop. When the benchmark returns, the
full result replaces it with ``complete: true``. So a reader can always tell a finished result from
what a killed run had measured so far: only a complete file has a ``summary``; an incomplete one has
``measured`` (one record per finished run, as the benchmark reported it) and ``progress``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()
_current: _Writer | None = None


class _Writer:
    def __init__(self, path: str, benchmark: str, environment: dict[str, Any]) -> None:
        self.path = path
        self.doc: dict[str, Any] = {
            "benchmark": benchmark, "complete": False, "environment": environment, "summary": {}, "model": {},
            "rows": [], "measured": [], "progress": None,
            "notes": ["incomplete: the run ended before the benchmark returned; 'measured' holds what it "
                      "had measured (no summary: a summary is taken over every repetition)"],
        }

    def write(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = f"{self.path}.partial"
        with open(tmp, "w") as f:
            json.dump(self.doc, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, self.path)  # a reader never sees half a file, whenever the process is killed


@contextlib.contextmanager
def writing(path: str | None, benchmark: str, environment: dict[str, Any]) -> Iterator[None]:
    """While the benchmark runs: keep ``path`` current with what it has measured (nothing if no path)."""
    global _current
    if not path:
        yield
        return
    writer = _Writer(path, benchmark, environment)
    writer.write()
    with _lock:
        outer, _current = _current, writer
    try:
        yield
    finally:
        with _lock:
            _current = outer


def measured(record: dict[str, Any]) -> None:
    """One finished measurement (a run of one arm, one size, ...): kept in the incomplete JSON at once."""
    with _lock:
        if _current is None:
            return
        _current.doc["measured"].append(record)
        _current.write()


def progressed(desc: str, done: int, total: int | None) -> None:
    """How far the benchmark's progress loop got (``bench.common.progress`` calls this per item)."""
    with _lock:
        if _current is None:
            return
        _current.doc["progress"] = {"loop": desc, "done": done, "total": total}
        _current.write()
