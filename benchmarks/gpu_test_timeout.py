"""pytest plugin used by ``benchmarks/gpu_check.py``: a time limit per test without pytest-timeout (the
device image has none), and every result appended to a JSON-lines file as soon as it is known.

A test past its limit makes faulthandler dump every thread's stack to stderr and end the process; the
file then holds a ``start`` record without a ``finish`` for it, and gpu_check.py resumes the run
without that test. Records, in order: ``collected`` (every test id this run will run), per test
``start``, ``result`` (each phase that did not pass, and the call) and ``finish`` (after its teardown:
a test whose call passed but that never finishes hung or crashed in teardown), and ``session_end``
with pytest's exit status (missing when the process died at the end of the session). Settings come from the environment (set by gpu_check.py):
``CC_GPU_CHECK_RESULTS`` (the JSON-lines path) and ``CC_GPU_CHECK_TEST_TIMEOUT_S`` (the longest any
one test may run; a smaller ``@pytest.mark.timeout(N)`` on the test wins).
"""

from __future__ import annotations

import faulthandler
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

_LIMIT_S = float(os.environ.get("CC_GPU_CHECK_TEST_TIMEOUT_S", "120"))
_RESULTS = os.environ.get("CC_GPU_CHECK_RESULTS")
# The real stderr, kept before pytest's capture redirects fd 2 to a file that dies with the process:
# the stack dump of a hung test must reach the step's log.
_STDERR = os.fdopen(os.dup(2), "w")


def _record(entry: dict[str, Any]) -> None:
    if not _RESULTS:
        return
    with open(_RESULTS, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())  # the process may be ended by the limit right after this


def _limit(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        try:
            return min(_LIMIT_S, float(marker.args[0]))
        except (TypeError, ValueError):
            pass
    return _LIMIT_S


def pytest_collection_finish(session: pytest.Session) -> None:
    _record({"event": "collected", "nodeids": [item.nodeid for item in session.items]})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    limit = _limit(item)
    _record({"event": "start", "nodeid": item.nodeid, "limit_s": limit, "time": time.time()})
    faulthandler.dump_traceback_later(limit, exit=True, file=_STDERR)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
    # Only reached once setup, call and teardown have all returned.
    _record({"event": "finish", "nodeid": item.nodeid, "time": time.time()})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _record({"event": "session_end", "exitstatus": int(exitstatus)})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        _record({"event": "result", "nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
                 "seconds": round(report.duration, 3),
                 "detail": str(report.longrepr)[-3000:] if report.outcome != "passed" else None})
