"""``bench.partial``: a benchmark's JSON is on disk from its start and holds each measured record at once;
only the finished result says ``complete: true``. The benchmark is a scripted module (its figures are
not what is tested); the writing path is the real one (``bench.run_one`` and ``bench.report``)."""

from __future__ import annotations

import json
import sys
import types

import pytest

from cc_runtime import bench
from cc_runtime.bench import partial
from cc_runtime.bench.common import BenchContext, BenchResult, progress


class Killed(Exception):
    pass


def _scripted(monkeypatch, die_after: int | None):
    mod = types.ModuleType("scripted_partial")

    def run(ctx):
        for i in progress(range(3), desc="arms"):
            partial.measured({"arm": i, "steps_s": 100.0 + i})
            if die_after is not None and i + 1 == die_after:
                raise Killed  # what a cap's kill leaves: the file as it was after the last record
        return BenchResult(benchmark="scripted", summary={"steps_s": 101.0}, rows=[{"arm": 0}])

    mod.run = run
    monkeypatch.setitem(sys.modules, "scripted_partial", mod)
    monkeypatch.setattr(bench, "BENCHMARKS", {"scripted": "scripted_partial"})


def test_a_benchmark_that_dies_leaves_its_measured_records_marked_incomplete(tmp_path, monkeypatch):
    _scripted(monkeypatch, die_after=2)
    path = tmp_path / "out" / "scripted.json"
    with pytest.raises(Killed):
        bench.run_one("scripted", BenchContext(device="cpu", json_path=str(path)))
    doc = json.loads(path.read_text())
    assert doc["complete"] is False and doc["summary"] == {}
    assert doc["measured"] == [{"arm": 0, "steps_s": 100.0}, {"arm": 1, "steps_s": 101.0}]
    assert doc["progress"] == {"loop": "arms", "done": 1, "total": 3}  # the second item's body never returned
    assert doc["environment"]["device_kind"] == "simulated"
    partial.measured({"after": "the run"})  # outside a run: nowhere to write, and no error
    assert json.loads(path.read_text())["measured"] == doc["measured"]


def test_a_finished_benchmark_replaces_it_with_the_complete_result(tmp_path, monkeypatch):
    _scripted(monkeypatch, die_after=None)
    path = tmp_path / "scripted.json"
    ctx = BenchContext(device="cpu", json_path=str(path))
    result = bench.run_one("scripted", ctx)
    assert json.loads(path.read_text())["complete"] is False  # until report() writes the result
    bench.report(result, str(path), [])
    doc = json.loads(path.read_text())
    assert doc["complete"] is True and doc["summary"] == {"steps_s": 101.0} and "measured" not in doc
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.partial"))
