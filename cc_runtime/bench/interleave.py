"""The order the arms of a comparison run in, and ratios taken within one repetition.

Every repetition runs every arm of a cell back to back, so a burst of background load on a shared
machine hits all arms of that repetition alike, and a ratio is taken between arms of the *same*
repetition. The arms' order is rotated from one repetition (and cell) to the next, so no arm always runs
first after a cell change, or always right after the same neighbour: a cost tied to position (a cold
cache, the previous arm's threads still winding down) is spread over every arm instead of biasing one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

C = TypeVar("C", bound=Hashable)


def schedule(reps: int, cells: Sequence[C], arms: Sequence[str]) -> list[tuple[int, C, str]]:
    """(repetition, cell, arm) in run order: repetition outermost, each cell's arms back to back, rotated."""
    order: list[tuple[int, C, str]] = []
    k = 0
    for rep in range(reps):
        for cell in cells:
            shift = k % len(arms) if arms else 0
            order += [(rep, cell, arm) for arm in (*arms[shift:], *arms[:shift])]
            k += 1
    return order


def per_rep(runs: Sequence[Any], base: Sequence[Any], fn: Callable[[Any, Any], float]) -> list[float]:
    """``fn(run, base_run)`` for each repetition: both lists are indexed by repetition."""
    if len(runs) != len(base):
        raise ValueError(f"{len(runs)} runs against {len(base)} baseline runs: repetitions must pair up")
    return [fn(r, b) for r, b in zip(runs, base, strict=True)]
