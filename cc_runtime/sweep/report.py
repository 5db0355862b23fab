"""The sweep's report, from saved JSONL only (so a table or a plot never needs a re-run).

Laid out like NVIDIA's published CC serving table (B300, SGLang 0.5.12, CC off vs on): per ISL/OSL, one row per concurrency with
output throughput per GPU for each arm, the difference in percent against CC off, median TTFT and median
TPOT for each arm. Columns are arms as they ran (``CC off``, ``emulated CC (h100)``, ``CC on +
cc_runtime`` ...), so runs merged from several machines keep their labels. Every number is what SGLang's
benchmark client measured in one run of that cell (no repetitions, so no spread); differences are
computed from those measurements. Plots need matplotlib; without it the report says the plots were
skipped and everything else is still written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .store import latest_per_cell, read_jsonl

REPORT_FILE = "report.md"
NO_MATPLOTLIB = "plots skipped: matplotlib is not installed (pip install 'cc-runtime[bench]')"
ARM_ORDER = {"cc-off": 0, "cc": 1, "cc+cc_runtime": 2}


@dataclass
class Report:
    markdown: str
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load(paths: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Records of every file, each tagged with its source; notes about unreadable lines or missing files."""
    records: list[dict[str, Any]] = []
    notes = []
    for path in paths:
        if not os.path.exists(path):
            notes.append(f"{path}: no such file")
            continue
        recs, bad = read_jsonl(path)
        if bad:
            notes.append(f"{path}: {bad} unreadable line(s) skipped")
        for r in recs:
            r["source_file"] = path
        records += recs
    return records, notes


def _columns(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Arm columns (by title, so an emulated and a real CC arm stay apart), in arm order."""
    seen: dict[str, int] = {}
    for r in records:
        seen.setdefault(str(r.get("arm_title")), ARM_ORDER.get(str(r.get("arm")), 9))
    return sorted(seen, key=lambda t: (seen[t], t))


def _fmt(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


#: Marks a Δ above CC off: neither CC arm can be faster than CC off, so it is noise (n=1), never a gain.
ABOVE_BASELINE = "†"


def _pct(v: float | None, base: float | None) -> str:
    if v is None or not base:
        return "—"
    delta = (v - base) / base * 100
    return f"{delta:+.1f}%" + (ABOVE_BASELINE if delta > 0 else "")


#: Lines of a failure's log tail that report.md shows (the whole reason stays in results.jsonl).
TAIL_LINES = 60


def _labels(records: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    devices = sorted({str(r.get("device")) for r in records if r.get("device") not in (None, "cuda")})
    if devices:
        out.append(f"**{'/'.join(d.upper() for d in devices)} DEVICE RESULTS**: SGLang served on "
                   f"`--device {devices[0]}`, not a GPU. Not a CC measurement: no CUDA work exists for CC to tax, "
                   "and cc_runtime's CUDA-only patches and the emulator are not applicable there, so every arm "
                   "runs as plain SGLang. They test that the sweep and the server run, nothing about CC.")
    if any(r.get("results_from") == "test-server" for r in records):
        out.append("**TEST SERVER RESULTS**: measured against cc_runtime's loopback test server, a stand-in for "
                   "a GPU server that runs no model; they test the sweep, not SGLang or CC.")
    emulated = sorted({str(r.get("cc")) for r in records if r.get("emulated")})
    if emulated:
        out.append(f"**EMULATED CC** ({', '.join(emulated)}): CC's costs imposed by cc_runtime's emulator on a "
                   "machine without CC, not measured under real CC.")
    return out


def build(records: Sequence[dict[str, Any]], notes: Sequence[str] = ()) -> tuple[str, dict[tuple[int, int], Any]]:
    """Markdown for the merged records, and per (ISL, OSL) the series the plots draw."""
    cells = latest_per_cell(r for r in records if r.get("kind") == "cell")
    lines = ["# CC serving sweep", ""]
    lines += [f"> {x}" for x in _labels(cells)] + ([""] if _labels(cells) else [])
    if not cells:
        return "\n".join(lines + ["No results."] + [f"- {n}" for n in notes]) + "\n", {}
    cols = _columns(cells)
    by_arm_title = {c: [r for r in cells if r.get("arm_title") == c] for c in cols}
    baseline = next((c for c in cols if by_arm_title[c][0].get("arm") == "cc-off"), None)
    lines.append("Output throughput per GPU = the client's output tok/s / GPUs used by the server. "
                 "Δ = (arm − CC off) / CC off for the same cell, from this table's own measurements; one client "
                 "run per cell (n=1, no spread). TTFT and TPOT are the client's medians in ms. "
                 f"{ABOVE_BASELINE} above CC off: noise, not a gain (CC cannot make serving faster than CC off).")
    lines.append("")
    series: dict[tuple[int, int], Any] = {}
    for isl, osl in sorted({(int(r["isl"]), int(r["osl"])) for r in cells}):
        rows = [r for r in cells if (r["isl"], r["osl"]) == (isl, osl)]
        section, series[(isl, osl)] = _section(isl, osl, rows, cols, baseline)
        lines += section
    lines += _failures(cells) + _environments(cells) + ([""] + [f"- {n}" for n in notes] if notes else [])
    return "\n".join(lines).rstrip() + "\n", series


def _metric(r: Mapping[str, Any] | None, key: str) -> float | None:
    return (r.get("metrics") or {}).get(key) if r and r.get("status") == "ok" else None


def _shown(r: Mapping[str, Any] | None, key: str, digits: int) -> str:
    if r is None:
        return "—"
    if r.get("status") != "ok":
        return str(r.get("status"))
    return _fmt(_metric(r, key), digits)


def _section(isl: int, osl: int, rows: Sequence[Mapping[str, Any]], cols: Sequence[str],
             baseline: str | None) -> tuple[list[str], dict[str, dict[str, list[Any]]]]:
    """One ISL/OSL table: per concurrency, each arm's throughput/GPU (with Δ vs CC off), TTFT, TPOT."""
    at = {(r.get("arm_title"), int(r["concurrency"])): r for r in rows}
    present = [c for c in cols if any(k[0] == c for k in at)]
    with_delta = baseline in present
    head = ["concurrency"]
    for c in present:
        head.append(f"{c} tok/s/GPU")
        if with_delta and c != baseline:
            head.append(f"Δ {c} vs CC off")
    head += [f"TTFT {c} (ms)" for c in present] + [f"TPOT {c} (ms)" for c in present]
    lines = [f"## ISL/OSL {isl}/{osl}", "", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    series: dict[str, dict[str, list[Any]]] = {}
    tput = "output_throughput_per_gpu"
    for conc in sorted({int(r["concurrency"]) for r in rows}):
        base = _metric(at.get((baseline, conc)), tput) if with_delta else None
        row = [str(conc)]
        for c in present:
            row.append(_shown(at.get((c, conc)), tput, 1))
            if with_delta and c != baseline:
                row.append(_pct(_metric(at.get((c, conc)), tput), base))
        row += [_shown(at.get((c, conc)), "median_ttft_ms", 1) for c in present]
        row += [_shown(at.get((c, conc)), "median_tpot_ms", 2) for c in present]
        lines.append("| " + " | ".join(row) + " |")
        for c in present:
            r = at.get((c, conc))
            s = series.setdefault(c, {k: [] for k in ("concurrency", "tput", "ttft", "tpot", "user")})
            if _metric(r, tput) is not None:
                s["concurrency"].append(conc)
                s["tput"].append(_metric(r, tput))
                s["ttft"].append(_metric(r, "median_ttft_ms"))
                s["tpot"].append(_metric(r, "median_tpot_ms"))
                s["user"].append(_metric(r, "tokens_per_s_per_user"))
    return lines + [""], series


def _failures(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    bad = [r for r in cells if r.get("status") != "ok"]
    if not bad:
        return []
    out = ["## Cells without a result", ""]
    shown: dict[str, str] = {}
    for r in sorted(bad, key=lambda r: (ARM_ORDER.get(r.get("arm", ""), 9), r["isl"], r["osl"], r["concurrency"])):
        reason = str(r.get("reason") or "").strip().splitlines()
        where = f"{r.get('arm_title')} ISL/OSL {r['isl']}/{r['osl']} concurrency {r['concurrency']}"
        out.append(f"- {where}: {r.get('status')}: {reason[0] if reason else 'no reason recorded'}")
        rest = reason[1:]
        if not rest:
            continue
        # The rest is a log tail (a traceback): shown in full once per distinct reason.
        key = "\n".join(reason)
        if key in shown:
            out.append(f"  (log tail as under {shown[key]})")
            continue
        shown[key] = where
        if len(rest) > TAIL_LINES:
            rest = [f"... ({len(rest) - TAIL_LINES} earlier lines: see results.jsonl)", *rest[-TAIL_LINES:]]
        out += ["", "  ```text", *(f"  {ln}" for ln in rest), "  ```", ""]
    return out + [""]


def _environments(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["## Where these numbers come from", ""]
    seen = set()
    for r in cells:
        env = r.get("environment") or {}
        versions = env.get("versions") or {}
        key = (r.get("source_file"), r.get("arm_title"))
        if key in seen:
            continue
        seen.add(key)
        out.append(f"- {r.get('arm_title')} ({r.get('source_file', 'this run')}): {r.get('results_label')}; host "
                   f"{env.get('host')}, GPUs {env.get('gpus') or 'none seen'} (server used {r.get('gpus_used')}), "
                   f"driver {env.get('driver')}, CC hardware {env.get('cc_hardware')}, SGLang "
                   f"{versions.get('sglang (server python)')}, cc-runtime {versions.get('cc-runtime')}, arm settings "
                   f"{r.get('arm_env')}, server args `{' '.join(r.get('server_args') or [])}`")
    return out


def plots_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(series: Mapping[tuple[int, int], Any], out_dir: str, labels: Sequence[str]) -> list[str]:
    """Three PNGs per ISL/OSL: throughput/GPU, TTFT and TPOT vs concurrency, tok/s/user vs tok/s/GPU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tag = " [" + "; ".join(labels) + "]" if labels else ""
    written = []
    for (isl, osl), arms in series.items():
        name = f"isl{isl}_osl{osl}"
        figs = []
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for arm, s in arms.items():
            ax.plot(s["concurrency"], s["tput"], marker="o", label=arm)
        ax.set(xscale="log", xlabel="concurrency", ylabel="output tok/s per GPU",
               title=f"Throughput per GPU, ISL/OSL {isl}/{osl}{tag}")
        figs.append((fig, ax, f"throughput_{name}.png"))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for arm, s in arms.items():
            axes[0].plot(s["concurrency"], s["ttft"], marker="o", label=arm)
            axes[1].plot(s["concurrency"], s["tpot"], marker="o", label=arm)
        axes[0].set(xscale="log", xlabel="concurrency", ylabel="median TTFT (ms)", title=f"TTFT {isl}/{osl}{tag}")
        axes[1].set(xscale="log", xlabel="concurrency", ylabel="median TPOT (ms)", title=f"TPOT {isl}/{osl}{tag}")
        figs.append((fig, axes[0], f"latency_{name}.png"))
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for arm, s in arms.items():
            ax.plot(s["user"], s["tput"], marker="o", label=arm)
        ax.set(xlabel="tok/s per user (1000 / median TPOT)", ylabel="output tok/s per GPU",
               title=f"Throughput vs interactivity, {isl}/{osl}{tag}")
        figs.append((fig, ax, f"interactivity_{name}.png"))
        concs = sorted({c for s in arms.values() for c in s["concurrency"]})
        for fig, ax, fname in figs:
            for a in fig.axes:
                a.grid(True, alpha=0.3)
                if a.get_xscale() == "log":
                    a.set_xscale("log", base=2)
                    a.set_xticks(concs, [str(c) for c in concs])
                    a.minorticks_off()
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = os.path.join(out_dir, fname)
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written


def write(records: Sequence[dict[str, Any]], out_dir: str, notes: Sequence[str] = ()) -> Report:
    """report.md and the PNGs in ``out_dir``."""
    notes = list(notes)
    os.makedirs(out_dir, exist_ok=True)
    md, series = build(records, notes)
    plots: list[str] = []
    if series:
        if plots_available():
            cells = latest_per_cell(r for r in records if r.get("kind") == "cell")
            short = (["TEST SERVER"] if any(r.get("results_from") == "test-server" for r in cells) else []) + (
                ["emulated CC"] if any(r.get("emulated") for r in cells) else [])
            plots = plot(series, out_dir, short)
        else:
            notes.append(NO_MATPLOTLIB)
            md += f"\n- {NO_MATPLOTLIB}\n"
    if plots:
        md += "\n## Plots\n\n" + "\n".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots) + "\n"
    with open(os.path.join(out_dir, REPORT_FILE), "w", encoding="utf-8") as f:
        f.write(md)
    return Report(md, plots, notes)
