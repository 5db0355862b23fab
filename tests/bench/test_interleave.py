"""The arms' run order: every repetition runs every arm of a cell back to back, in a rotated order."""

from __future__ import annotations

import pytest

from cc_runtime.bench.interleave import per_rep, schedule


def test_each_repetition_runs_every_arm_of_a_cell_back_to_back():
    order = schedule(3, ["a", "b"], ["x", "y", "z"])
    assert len(order) == 3 * 2 * 3
    for i in range(0, len(order), 3):
        block = order[i:i + 3]
        assert len({(rep, cell) for rep, cell, _ in block}) == 1, block
        assert sorted(arm for _, _, arm in block) == ["x", "y", "z"]
    assert [rep for rep, _, _ in order] == sorted(rep for rep, _, _ in order), "repetition outermost"


def test_no_arm_always_runs_first():
    """A cost tied to position (first after a cell change) is spread over every arm."""
    order = schedule(3, ["a"], ["x", "y", "z"])
    firsts = [order[i][2] for i in range(0, len(order), 3)]
    assert sorted(firsts) == ["x", "y", "z"]


def test_ratios_pair_runs_of_the_same_repetition():
    assert per_rep([2.0, 4.0], [1.0, 8.0], lambda a, b: a / b) == [2.0, 0.5]
    with pytest.raises(ValueError, match="pair up"):
        per_rep([1.0], [1.0, 2.0], lambda a, b: a / b)
