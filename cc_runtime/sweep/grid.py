"""The sweep's grid: which (ISL, OSL, concurrency) cells to run, and how each turns into client argv.

Defaults follow NVIDIA's published CC serving table (B300, SGLang 0.5.12, CC off vs on): ISL/OSL 1024/1024 and 8192/1024 at
concurrency 4..256, fixed-length random prompts (``--dataset-name random-ids --random-range-ratio 1``:
the client's default ratio 0.0 draws lengths from [1, L], and plain ``random`` samples ShareGPT, which
needs a download; ``--tokenize-prompt`` sends the token ids themselves, so the server sees exactly ISL
tokens instead of a decoded-and-re-encoded text of another length), a fixed seed, warmup, and a prompt count that grows with concurrency so every cell
runs several full waves. As in vLLM's ``ParameterSweepItem.apply_to_cmd``, a cell renders itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: NVIDIA's CC serving table: (ISL, OSL) pairs and concurrencies.
DEFAULT_ISL_OSL: tuple[tuple[int, int], ...] = ((1024, 1024), (8192, 1024))
DEFAULT_CONCURRENCY: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256)
#: ``--quick``: a smoke grid (minutes on a GPU, not hours).
QUICK_ISL_OSL: tuple[tuple[int, int], ...] = ((1024, 128),)
QUICK_CONCURRENCY: tuple[int, ...] = (4, 16)

DEFAULT_PROMPTS_PER_CONCURRENCY = 10
QUICK_PROMPTS_PER_CONCURRENCY = 4
MIN_PROMPTS = 16
DEFAULT_SEED = 42


@dataclass(frozen=True)
class Cell:
    """One grid point: ``num_prompts`` fixed-length requests at ``concurrency`` in flight."""

    isl: int
    osl: int
    concurrency: int
    num_prompts: int
    warmup_requests: int
    seed: int = DEFAULT_SEED

    @property
    def name(self) -> str:
        """The cell's folder name and progress-bar label."""
        return f"isl{self.isl}_osl{self.osl}_c{self.concurrency}"

    @property
    def label(self) -> str:
        return f"ISL/OSL {self.isl}/{self.osl} concurrency {self.concurrency}"

    def client_args(self) -> list[str]:
        """The benchmark client's arguments for this cell (the same flags in SGLang 0.5.12 and 0.5.23)."""
        return [
            "--dataset-name", "random-ids",
            "--random-input-len", str(self.isl),
            "--random-output-len", str(self.osl),
            "--random-range-ratio", "1",
            "--tokenize-prompt",
            "--num-prompts", str(self.num_prompts),
            "--max-concurrency", str(self.concurrency),
            "--request-rate", "inf",
            "--warmup-requests", str(self.warmup_requests),
            "--seed", str(self.seed),
        ]


def num_prompts_for(concurrency: int, per_concurrency: int) -> int:
    return max(MIN_PROMPTS, concurrency * per_concurrency)


def build_grid(
    isl_osl: Sequence[tuple[int, int]],
    concurrency: Sequence[int],
    *,
    prompts_per_concurrency: int = DEFAULT_PROMPTS_PER_CONCURRENCY,
    num_prompts: int | None = None,
    warmup_requests: int | None = None,
    seed: int = DEFAULT_SEED,
) -> list[Cell]:
    """Every (ISL/OSL, concurrency) pair in table order. ``num_prompts`` fixes the count for every cell;
    otherwise it is ``concurrency * prompts_per_concurrency`` (at least MIN_PROMPTS). Warmup defaults to
    one request per concurrency slot, so the batch shapes of the measured run are warm."""
    cells = []
    for isl, osl in isl_osl:
        for c in concurrency:
            n = num_prompts if num_prompts is not None else num_prompts_for(c, prompts_per_concurrency)
            cells.append(Cell(isl, osl, c, n, c if warmup_requests is None else warmup_requests, seed))
    return cells


def parse_isl_osl(text: str) -> list[tuple[int, int]]:
    """``"1024/1024,8192/1024"`` -> [(1024, 1024), (8192, 1024)]; ValueError with the bad part."""
    pairs = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        isl, sep, osl = part.partition("/")
        if not sep or not isl.strip().isdigit() or not osl.strip().isdigit() or int(isl) <= 0 or int(osl) <= 0:
            raise ValueError(f"ISL/OSL pair {part!r} is not two positive integers like 1024/1024")
        pairs.append((int(isl), int(osl)))
    if not pairs:
        raise ValueError("no ISL/OSL pair given (e.g. 1024/1024,8192/1024)")
    return pairs


def parse_ints(text: str, what: str) -> list[int]:
    """``"4,8,16"`` -> [4, 8, 16]; ValueError naming ``what`` on anything else."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) <= 0:
            raise ValueError(f"{what} {part!r} is not a positive integer")
        out.append(int(part))
    if not out:
        raise ValueError(f"no {what} given")
    return out
