"""``cc-runtime bench emulator --against-published`` and ``charge_error_us``: the published figures file is
complete and agrees with the profiles' sources, every row names its source, and both checks catch an
emulator that misses (deliberately broken simulated device, deliberately slow clock). No speed asserts:
the measured values are only required to show a gross, deliberate error."""

from __future__ import annotations

import json
import re

import pytest

from cc_runtime import cli
from cc_runtime.bench import published
from cc_runtime.bench.common import BenchContext
from cc_runtime.emulator import BUILTIN, SimDevice, load_profile

REQUIRED = ("id", "quantity", "value", "unit", "hardware", "method", "source", "url", "found_in", "profile",
            "bench", "fit_by", "in_max")


def _source_id(source: str) -> str:
    """The identifier a profile's source text would cite: an arXiv number, an issue/PR number, a file."""
    m = re.search(r"arXiv (\d{4}\.\d{5})|issue (\d+)|(confidential_compute)", source)
    assert m, source
    return next(g for g in m.groups() if g)


def test_every_figure_names_its_source_hardware_method_and_profile() -> None:
    figures = published.load_figures()
    assert len({f["id"] for f in figures}) == len(figures)
    for f in figures:
        assert all(f.get(k) not in (None, "") for k in REQUIRED if k != "fit_by"), f["id"]
        assert f["profile"] in BUILTIN and all(p in BUILTIN for p in f["fit_by"]), f["id"]
        assert f["in_max"] or f.get("why_not_in_max"), f["id"]
        lo, hi = f.get("range") or (f["value"], f["value"])
        assert lo <= f["value"] <= hi, f["id"]


def test_fit_by_agrees_with_the_profiles_sources() -> None:
    """A profile marked as fit to a figure cites that figure's source; a holdout is cited by no profile."""
    for f in published.load_figures():
        sid = _source_id(f["source"])
        citing = {name for name, p in BUILTIN.items() if any(sid in str(s) for s in p.sources.values())}
        if f["fit_by"]:
            assert set(f["fit_by"]) <= citing, (f["id"], citing)
        elif f["in_max"]:
            assert not citing, (f["id"], citing)


def test_rel_error_counts_a_published_range_as_met() -> None:
    fig = {"value": 4.5, "range": [3.0, 6.0]}
    assert published.rel_error(3.2, fig) == 0 and published.rel_error(5.9, fig) == 0
    assert published.rel_error(9.0, fig) == pytest.approx(0.5) and published.rel_error(1.5, fig) == pytest.approx(0.5)
    assert published.rel_error(0.2, {"value": 0.203}) == pytest.approx(0.003 / 0.203)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("pub") / "P.json"
    assert cli.main(["bench", "emulator", "--device", "cpu", "--quick", "--against-published", "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.timeout(180)
def test_against_published_reports_a_row_per_figure_with_its_source(result) -> None:
    s = result["summary"]
    assert {"max_rel_error_vs_published_fit", "max_rel_error_vs_published_holdout", "charge_error_us"} <= set(s)
    ids = [f["id"] for f in published.load_figures()]
    assert [r["id"] for r in result["rows"]] == ids
    for r in result["rows"]:
        assert r["source"] and r["hardware"] and r["method"]
        assert r["rel_error"] is None or r["measured_spread"]["n"] >= 1  # None: no usable repetition (load)
    # Each maximum is a spread over the suite's repetitions of that repetition's largest error.
    for key, want_fit in (("max_rel_error_vs_published_fit", True), ("max_rel_error_vs_published_holdout", False)):
        chosen = [r for r in result["rows"] if r["in_max"] and (r["fit_by"] != "holdout") == want_fit]
        figs = {f["id"]: f for f in published.load_figures()}
        per_rep = [max(published.rel_error(e, figs[r["id"]]) for r in chosen if (e := r["estimates"][i]) is not None)
                   for i in range(len(chosen[0]["estimates"]))]
        assert s[key] == {"median": pytest.approx(sorted(per_rep)[1]), "min": min(per_rep), "max": max(per_rep), "n": 3}
    assert result["environment"]["device_kind"] == "simulated" and "max_rel_error_vs_profile" not in s
    ce = s["charge_error_us"]
    assert set(ce) == {"median", "min", "max", "n"} and ce["n"] == 5
    assert "empty call" in result["environment"]["charge_error"]["method"]
    # Switches and semantics are exact on the simulated device whatever the load.
    rows = {r["id"]: r for r in result["rows"]}
    assert rows["h200_host_register_801"]["rel_error"] == 0


@pytest.mark.timeout(180)
def test_a_device_that_misses_the_published_figures_is_caught(monkeypatch) -> None:
    """Deliberately broken simulated device: every host<->device copy made twice (twice the cost)."""
    original = SimDevice.copy_

    def twice(self, dst, src, stream=None, non_blocking=False):
        original(self, dst, src, stream, non_blocking)
        return original(self, dst, src, stream, non_blocking)

    monkeypatch.setattr(SimDevice, "copy_", twice)
    fig = next(f for f in published.load_figures() if f["id"] == "b300_small_crossing")
    values, _ = published._measure(fig, load_profile("b300"), 0, True)
    assert published.rel_error(min(values), fig) > 0.5


@pytest.mark.timeout(60)
def test_charge_error_catches_a_clock_that_overshoots(monkeypatch) -> None:
    from cc_runtime.bench.emulator import charge_error
    from cc_runtime.emulator import clock

    real = clock.charge_s
    monkeypatch.setattr(clock, "charge_s", lambda seconds: real(seconds + 20e-6))  # deliberately 20 us late
    summary, rows, empty_us = charge_error(reps=9)
    assert summary["min"] > 10 and len(rows) == 5 and empty_us >= 0


def test_bench_context_default_is_not_against_published() -> None:
    assert not BenchContext().extra.get("against_published")


def test_the_emulator_doc_lists_every_published_figure() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "emulator.md").read_text()
    assert all(f"`{f['id']}`" in doc for f in published.load_figures())
