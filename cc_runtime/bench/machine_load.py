"""How loaded the machine was while a benchmark ran: load average and CPU steal, before and after.

A benchmark's spread means little without it: on a small shared VM, other processes (and the
hypervisor, through steal) take the same cores as the arms being compared. ``cc-runtime bench`` puts
:func:`snapshot` before and after every benchmark into ``environment["load"]``, with the share of CPU
time stolen and busy over the run from ``/proc/stat``'s aggregate ``cpu`` line. Where ``/proc`` is
missing (not Linux) the fields say so instead.
"""

from __future__ import annotations

import os
import time
from typing import Any

#: /proc/stat's aggregate "cpu" line, in order (proc(5)); guest time is already counted in user.
_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def _proc_stat(path: str = "/proc/stat") -> dict[str, int] | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("cpu "):
                    values = [int(v) for v in line.split()[1:1 + len(_FIELDS)]]
                    return dict(zip(_FIELDS, values + [0] * (len(_FIELDS) - len(values)), strict=True))
    except (OSError, ValueError):
        return None
    return None


def snapshot() -> dict[str, Any]:
    """Load averages (1, 5, 15 min), runnable tasks, and /proc/stat's cumulative CPU ticks, now."""
    out: dict[str, Any] = {"time": time.time(), "cpu_count": os.cpu_count()}
    try:
        out["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        out["loadavg"] = None
    try:
        with open("/proc/loadavg") as f:
            out["runnable"] = f.read().split()[3]  # "running/total" scheduling entities
    except (OSError, IndexError):
        pass
    out["proc_stat_ticks"] = _proc_stat()
    return out


def over_run(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``environment["load"]``: both snapshots and, from their difference, the share of all CPU time
    (every core) that was stolen by the hypervisor and that was busy (anything but idle and iowait)."""
    load: dict[str, Any] = {"before": before, "after": after,
                            "seconds": round(after["time"] - before["time"], 3)}
    b, a = before.get("proc_stat_ticks"), after.get("proc_stat_ticks")
    if b and a:
        delta = {k: a[k] - b[k] for k in _FIELDS}
        total = sum(delta.values())
        if total > 0:
            load["steal_pct"] = round(100.0 * delta["steal"] / total, 2)
            load["busy_pct"] = round(100.0 * (total - delta["idle"] - delta["iowait"]) / total, 2)
        else:
            load["steal_pct"] = load["busy_pct"] = None
            load["why_missing"] = "the run was shorter than one /proc/stat tick"
    else:
        load["steal_pct"] = load["busy_pct"] = None
        load["why_missing"] = "no /proc/stat on this platform"
    return load


def busy_note(load: dict[str, Any]) -> str | None:
    """A note for a result taken while more tasks wanted the CPU than it has cores, or None."""
    before, after = load.get("before") or {}, load.get("after") or {}
    cores = before.get("cpu_count") or 0
    avgs = [s["loadavg"][0] for s in (before, after) if s.get("loadavg")]
    if not cores or not avgs or max(avgs) <= cores:
        return None
    return (f"machine loaded: 1-minute load average {min(avgs):g}-{max(avgs):g} on {cores} cores "
            f"(busy {load.get('busy_pct')}%, steal {load.get('steal_pct')}% over the run): other processes "
            "shared these cores, so times, ratios and per-thread CPU figures are inflated and their spreads "
            "widened by contention")
