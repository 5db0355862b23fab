"""What every ``cc-runtime bench`` benchmark shares: context, environment block, table, JSON, plot.

Every benchmark JSON has ``benchmark``, ``environment`` (with ``device`` and ``cc``), ``summary`` (flat
metric names to numbers) and ``rows`` (the printed table). Emulated or simulated figures say so in
``environment.cc`` / ``environment.device_kind`` and in the table title, never only in a footnote.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import partial

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
            "complete": True,  # a run killed before this point leaves complete: false (bench.partial)
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


def ratio_spread(values: Iterable[float], above_one: str | None = None) -> dict[str, Any]:
    """:func:`spread` of a ratio to a CC-off baseline, read honestly: above 1.0 is never a gain.

    CC (emulated or real) cannot make the same work faster than CC off does. A spread that only reaches
    above 1.0 is within this run's noise, and the entry says so. A spread above 1.0 in *every* repetition
    is a bias, not noise: ``above_one`` says where it comes from (e.g. a baseline that does more work
    than the arm compared with it); without one, the entry says it is unexplained.
    """
    s: dict[str, Any] = spread(values)
    if s["min"] > 1.0:
        s["reading"] = ("above 1.0 in every repetition, not a gain: "
                        + (above_one or "a bias of the measurement that is not explained yet"))
    elif s["max"] > 1.0:
        s["reading"] = "within noise of 1.0 (above 1.0 is noise, not a gain)"
    return s


def fmt_spread(s: Any, digits: int = 3) -> str:
    """``median [min-max]`` for a table cell (flagged when a ratio's spread reaches above 1.0); anything
    else as :func:`_fmt` shows it."""
    if isinstance(s, dict) and "median" in s:
        text = f"{_fmt_num(s['median'], digits)} [{_fmt_num(s['min'], digits)}-{_fmt_num(s['max'], digits)}]"
        if "reading" not in s:
            return text
        if s["min"] > 1.0:
            return text + " (above 1.0 in every repetition: a biased baseline, not a gain)"
        return text + " (above 1.0: noise, not a gain)"
    if isinstance(s, dict) and "value" in s:  # one measured figure (a fraction of n trials, ...)
        return _fmt(s["value"])
    return _fmt(s)


def _fmt_num(v: float, digits: int) -> str:
    if v != v:
        return "nan"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def headline(value: Any) -> float | None:
    """The number a goal is checked against: a spread's median, a plain number, or None."""
    if isinstance(value, dict):
        value = value.get("median", value.get("value"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def thread_cpu_clock(thread: Any) -> Callable[[], float] | None:
    """A function returning ``thread``'s CPU seconds, readable from any thread; None where unsupported.

    ``time.thread_time`` only reads the calling thread; the kernel's per-thread CPU clock
    (``pthread_getcpuclockid``) reads another one, so a worker is measured without touching its code.
    """
    get_id = getattr(time, "pthread_getcpuclockid", None)
    ident = getattr(thread, "ident", None)
    if get_id is None or ident is None:
        return None
    try:
        clock_id = get_id(ident)
        time.clock_gettime(clock_id)
    except (OSError, OverflowError):
        return None
    return lambda: time.clock_gettime(clock_id)


@contextlib.contextmanager
def one_intra_op_thread(device: str) -> Iterator[None]:
    """On the simulated device (CPU), run torch with one intra-op thread for the duration.

    The simulated device's worker threads stand in for a GPU and share this machine's cores with
    torch's OpenMP pool: on a small shared machine a parallel ``torch.cat`` of 200 KB then takes ms
    instead of us (the pool spins against the device threads), an artefact no GPU host has. On a GPU
    nothing changes."""
    if device == "cuda":
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    if isinstance(v, dict) and "median" in v:
        return fmt_spread(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
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
    with open(f"{path}.tmp", "w") as f:
        json.dump(result.as_json(), f, indent=2, default=str)
        f.write("\n")
    os.replace(f"{path}.tmp", path)  # replaces the incomplete file (bench.partial) in one step


def progress(items: Iterable[T], desc: str, total: int | None = None, every_s: float = 3.0) -> Iterator[T]:
    """Progress for long runs: tqdm on a terminal; elsewhere (CI logs, pipes) a plain line on stderr at
    most every ``every_s`` seconds, so a long silence always says which step it is in."""
    import sys

    if sys.stderr.isatty():
        try:
            from tqdm import tqdm

            for i, item in enumerate(tqdm(items, desc=desc, total=total, leave=False)):
                yield item
                partial.progressed(desc, i + 1, total)
            return
        except ImportError:
            pass
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    start = last = time.monotonic()
    for i, item in enumerate(items):
        now = time.monotonic()
        if now - last >= every_s:
            print(f"  {desc}: {i}/{total if total is not None else '?'} ({now - start:.0f}s)", file=sys.stderr,
                  flush=True)
            last = now
        yield item
        partial.progressed(desc, i + 1, total)  # the loop body for this item has returned


def plot_summary(result: BenchResult, path: str) -> str | None:
    """One PNG of a result's summary: each value's median with its min-max range (a single value as a
    point), one panel per key (their units differ). Returns why it was not written, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'cc-runtime[bench]')"
    items = [(k, v if isinstance(v, dict) else {"median": float(v), "min": float(v), "max": float(v), "n": 1})
             for k, v in result.summary.items()
             if (isinstance(v, dict) and "median" in v) or (isinstance(v, (int, float)) and not isinstance(v, bool))]
    if not items:
        return "no numeric summary value to plot"
    fig, axes = plt.subplots(len(items), 1, figsize=(6, 0.9 * len(items) + 0.8), squeeze=False)
    for ax, (key, v) in zip(axes[:, 0], items, strict=True):
        ax.errorbar([v["median"]], [0], xerr=[[v["median"] - v["min"]], [v["max"] - v["median"]]], fmt="o",
                    capsize=4)
        ax.set_yticks([0], [f"{key} (n={v['n']})"])
        ax.tick_params(axis="x", labelsize=8)
    kind = result.environment.get("device_kind", "")
    fig.suptitle(f"{result.benchmark}: median [min-max] ({kind})", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return None
