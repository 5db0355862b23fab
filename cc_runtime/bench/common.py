"""What every ``cc-runtime bench`` benchmark shares: context, environment block, table, JSON, plot.

Every benchmark JSON has ``benchmark``, ``environment`` (with ``device`` and ``cc``), ``summary`` (flat
metric names to numbers) and ``rows`` (the printed table). Emulated or simulated figures say so in
``environment.cc`` / ``environment.device_kind`` and in the table title, never only in a footnote.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class BenchContext:
    quick: bool = True
    device: str = "cpu"  # "cpu" (simulated device) or "cuda"
    emulate: str = "h100"  # profile used for the emulated-CC arms
    json_path: str | None = None
    plot_path: str | None = None
    long: bool = False
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        return self.device != "cuda"


@dataclass
class BenchResult:
    benchmark: str
    #: What this run measured, each value with its spread over repetitions (see :func:`spread`).
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    columns: Sequence[str] | None = None
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    #: What was computed from a profile, a launch count or a constant, never measured: each entry names
    #: its source (``{"value": ..., "source": "..."}``), so it cannot be read as evidence.
    model: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "environment": self.environment,
            "summary": self.summary,
            "model": self.model,
            "rows": self.rows,
            "notes": self.notes,
        }


def spread(values: Iterable[float]) -> dict[str, float]:
    """A measured summary value: median, min and max over this run's repetitions (and how many)."""
    vals = sorted(float(v) for v in values)
    if not vals:
        raise ValueError("spread() of no measurements")
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1], "n": len(vals)}


def modelled(value: Any, source: str) -> dict[str, Any]:
    """A ``model`` entry: a value that was computed or assumed, with where it came from."""
    return {"value": value, "source": source}


def default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        return "cpu"


def environment(ctx: BenchContext, *, emulated: bool = True) -> dict[str, Any]:
    """Where and how the numbers were taken. ``cc`` is ``off``/``on``/``emulated:<profile>``."""
    from ..detect import cc_state
    from ..doctor import _versions

    real = cc_state()
    if real.real:
        cc = "on"
    elif emulated:
        cc = f"emulated:{_profile_name(ctx.emulate)}"
    else:
        cc = "off"
    device_name = "simulated (CPU threads)"
    if ctx.device == "cuda":
        try:
            import torch

            device_name = torch.cuda.get_device_name(0)
        except Exception as exc:  # noqa: BLE001
            device_name = f"cuda (name unavailable: {exc})"
    return {
        "device": device_name,
        "device_kind": "cuda" if ctx.device == "cuda" else "simulated",
        "cc": cc,
        "cc_real_state": real.label,
        "emulator_profile": ctx.emulate if emulated else None,
        "quick": ctx.quick,
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": _versions(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _profile_name(spec: str) -> str:
    """A JSON profile's own name, not its path, goes into the label."""
    try:
        from ..emulator.profiles import load_profile

        return load_profile(spec).name
    except Exception:  # noqa: BLE001 - the label must not fail; main_bench validates the profile first
        return spec


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "nan"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    return str(v)


def format_table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None, title: str = "") -> str:
    if not rows:
        return f"{title}\n(no rows)"
    cols = list(columns or rows[0].keys())
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    out = [title] if title else []
    # Numbers right-aligned, text left-aligned, as people read tables.
    numeric = [all(isinstance(r.get(c), (int, float)) for r in rows) for c in cols]

    def cell(v: str, w: int, num: bool) -> str:
        return v.rjust(w) if num else v.ljust(w)

    out.append("  ".join(cell(c, w, n) for c, w, n in zip(cols, widths, numeric, strict=True)).rstrip())
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(cell(v, w, n) for v, w, n in zip(row, widths, numeric, strict=True)).rstrip()
            for row in cells]
    return "\n".join(out)


def print_table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None, title: str = "") -> None:
    print(format_table(rows, columns, title), flush=True)


def write_json(path: str, result: BenchResult) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result.as_json(), f, indent=2, default=str)
        f.write("\n")


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """tqdm progress on a terminal for long runs; silent when output is not a TTY (CI logs)."""
    try:
        import sys

        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, disable=not sys.stderr.isatty(), leave=False)
    except ImportError:
        yield from items
