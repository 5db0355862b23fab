"""The GPU-test step of ``benchmarks/gpu_check.py``: pytest under per-test limits, judged from its events
and its exit code, never from either alone.

The plugin (``gpu_test_timeout.py``) appends each event to a JSON-lines file as it happens: the tests
collected, each test's start, its results and its finish (after teardown), and the session's end. A
run then reads:

* a test that started and never finished hung or crashed (in setup, call or teardown: a test whose
  call passed and whose teardown hung is a failure too); the run resumes without it;
* a test that was collected and never started did not run (budget spent, or the process died first),
  and is listed as such;
* pytest's exit code must agree: 0, or 1 with failures recorded; anything else (an internal error, a
  usage error, a crash at exit after every test finished, a signal) fails the step with its reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_EXIT = {2: "interrupted or a collection error", 3: "pytest internal error", 4: "pytest usage error",
         5: "no tests collected"}


@dataclass
class TestLog:
    collected: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # first failing phase, else the call
    session_ends: int = 0

    @property
    def unfinished(self) -> list[str]:
        return [n for n in self.started if n not in self.finished]


def read_test_log(path: Path) -> TestLog:
    log = TestLog()
    if not path.exists():
        return log
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by the end of the process
        event = rec.get("event")
        if event == "collected":
            log.collected += [n for n in rec.get("nodeids", []) if n not in log.collected]
        elif event == "start":
            log.started.append(rec["nodeid"])
        elif event == "finish":
            log.finished.add(rec["nodeid"])
        elif event == "result":
            prev = log.results.get(rec["nodeid"])
            if prev is None or (prev["outcome"] == "passed" and rec["outcome"] != "passed"):
                log.results[rec["nodeid"]] = rec  # a teardown error after a passed call: the error wins
        elif event == "session_end":
            log.session_ends += 1
    return log


def _judge_run(run: dict[str, Any], before: TestLog, after: TestLog, new_broken: list[str]) -> str | None:
    """Why this pytest run failed beyond what its tests' own outcomes say, or None."""
    rc = run.get("rc")
    if rc is None:
        return None if new_broken else f"{run['status']} with no test running"
    if new_broken:
        return None  # the broken test explains the exit (faulthandler's exit 1, or the crash's signal)
    if after.session_ends == before.session_ends:
        return f"pytest exit {rc}: the process ended after its last test without finishing the session"
    if rc == 0:
        return None
    if rc == 1:
        new_failed = [n for n, r in after.results.items() if r["outcome"] == "failed"
                      and before.results.get(n, {}).get("outcome") != "failed"]
        return None if new_failed else "pytest exit 1 with no failed test recorded"
    if rc < 0:
        return f"pytest killed by signal {-rc} after every test finished"
    return f"pytest exit {rc} ({_EXIT.get(rc, 'unknown')})"


def run_gpu_tests(out: Path, paths: list[str], budget_s: float, per_test_s: float, py: str,
                  env: dict[str, str], step: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Every GPU test under ``paths``; a test that hangs or crashes is recorded and the run resumes
    without it, until every collected test has run or the budget is spent."""
    jsonl, log_path = out / "gpu_tests.jsonl", out / "gpu_tests.log"
    jsonl.write_text("")
    log_path.write_text("")
    env = {**env, "CC_GPU_CHECK_RESULTS": str(jsonl), "CC_GPU_CHECK_TEST_TIMEOUT_S": str(per_test_s)}
    deadline = time.monotonic() + budget_s
    broken: list[str] = []
    crashed: list[str] = []
    problems: list[str] = []
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    while True:
        before = read_test_log(jsonl)
        left = deadline - time.monotonic()
        if left < 10:
            break
        done = [*before.finished, *broken]
        cmd = [py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-p", "gpu_test_timeout",
               f"--junitxml={out / f'gpu_tests_{len(runs)}.xml'}", *paths, *[f"--deselect={n}" for n in done]]
        run = step(f"gpu-tests (run {len(runs) + 1})", cmd, left, log_path, env=env, log_mode="a")
        runs.append(run)
        after = read_test_log(jsonl)
        new_broken = [n for n in after.unfinished if n not in broken]
        if new_broken and (run.get("rc") or 0) < 0:
            crashed += new_broken  # a signal, not faulthandler's exit: the process crashed in that test
        broken += new_broken
        why = _judge_run(run, before, after, new_broken)
        if why:
            problems.append(f"run {len(runs)}: {why}")
        not_started = [n for n in after.collected if n not in after.started]
        if not new_broken or not not_started:
            break  # nothing was cut short, or nothing is left to resume
    final = read_test_log(jsonl)
    counts: dict[str, int] = {}
    for rec in final.results.values():
        counts[rec["outcome"]] = counts.get(rec["outcome"], 0) + 1
    after_call = [n for n in broken if final.results.get(n, {}).get("when") == "call"
                  and final.results[n]["outcome"] == "passed"]
    not_run = [n for n in final.collected if n not in final.started]
    failed = [n for n, r in final.results.items() if r["outcome"] == "failed"]
    if not final.collected and not problems:
        problems.append("no test was collected")
    ok = not broken and not not_run and not failed and not problems
    return {"step": "gpu-tests", "status": "ok" if ok else "failed", "seconds": round(time.perf_counter() - t0, 1),
            "cap_s": round(budget_s, 1), "cpu_seconds": round(sum(r.get("cpu_seconds", 0.0) for r in runs), 1),
            "log": log_path.name, "results": jsonl.name, "counts": counts,
            "timed_out": [n for n in broken if n not in crashed], "crashed": crashed,
            "hung_or_crashed_after_call": after_call, "failed": failed, "not_run": not_run,
            "problems": problems, "files": _per_file(final), "runs": runs}


def _per_file(log: TestLog) -> dict[str, dict[str, int]]:
    """Outcome counts per test file (what the patches' GPU evidence is read from)."""
    files: dict[str, dict[str, int]] = {}
    for nodeid in log.collected:
        rec = log.results.get(nodeid)
        outcome = rec["outcome"] if rec else ("not run" if nodeid not in log.started else "hung or crashed")
        if rec and nodeid not in log.finished:
            outcome = "hung or crashed"
        counts = files.setdefault(nodeid.split("::", 1)[0], {})
        counts[outcome] = counts.get(outcome, 0) + 1
    return files
