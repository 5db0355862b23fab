"""From measurements to a profile (with each value's spread), and a profile against a reference.

Copy lines ``t = t0 + bytes / BW`` come from two points: the smallest size (where the fixed part
dominates) and the largest (where bandwidth does); every size's residual is kept. Launch, graph
replay and D2D fields of a CC profile are *extras* over CC off, so they need a CC-off baseline: a
calibrate JSON from the same kind of machine with CC off (``--baseline``), or, on the simulated
device and in the emulator round trip, one measured in the same run.
"""

from __future__ import annotations

import statistics
from typing import Any

from ..bench.common import spread
from ..emulator.profiles import BUILTIN, Profile
from .measurements import COPY_KINDS, copy_key

__all__ = ["NUMERIC", "compare", "derive_profile", "fit_copy", "summarize"]

#: Numeric profile fields calibrate recovers, compared in the round trip.
NUMERIC = ("h2d_fixed_s", "d2h_fixed_s", "h2d_bandwidth_Bps", "d2h_bandwidth_Bps", "pageable_h2d_fixed_s",
           "pageable_d2h_fixed_s", "pageable_h2d_bandwidth_Bps", "pageable_d2h_bandwidth_Bps", "launch_extra_s",
           "graph_replay_extra_s", "d2d_extra_s")
#: Sampled probabilities: reported beside the others, not in the maximum (binomial spread at n readings).
SAMPLED = ("event_corrupt_prob", "event_negative_prob")
SWITCH_MEASURES = {
    "pageable_h2d_blocking": ("blocking", "pageable_h2d_waits_for_its_stream"),
    "copies_serialize_across_streams": ("serialization", "serialized"),
    "host_register_fails": ("host_register", "fails"),
    "multicast_unsupported": ("multicast", "fails"),
}
_FIELD = {("h2d", True): ("h2d_fixed_s", "h2d_bandwidth_Bps"), ("d2h", True): ("d2h_fixed_s", "d2h_bandwidth_Bps"),
          ("h2d", False): ("pageable_h2d_fixed_s", "pageable_h2d_bandwidth_Bps"),
          ("d2h", False): ("pageable_d2h_fixed_s", "pageable_d2h_bandwidth_Bps")}
_CAVEATS = {"multicast_unsupported": "; multicast also fails without NVSwitch, CC or not (see measurements."
                                    "multicast.device_attribute_multicast_supported)",
            "copies_serialize_across_streams": "; H2D on one thread vs D2H on another (separate copy engines "
                                               "with CC off)"}
_EXTRAS = {"launch_extra_s": "launch_s", "graph_replay_extra_s": "graph_replay_s", "d2d_extra_s": "d2d_small_s"}


def fit_copy(per_size: dict[Any, list[float]]) -> tuple[float, float, dict[str, Any], dict[str, Any]]:
    """``(fixed_s, bandwidth_Bps, fixed spread, bandwidth spread)`` from seconds per copy by size."""
    sizes = sorted(int(k) for k in per_size)
    lo, hi = sizes[0], sizes[-1]
    t_lo = statistics.median(per_size[_key(per_size, lo)])
    t_hi = statistics.median(per_size[_key(per_size, hi)])
    bw = (hi - lo) / max(t_hi - t_lo, 1e-12)
    fixed = max(0.0, t_lo - lo / bw)
    fixed_reps = [max(0.0, t - lo / bw) for t in per_size[_key(per_size, lo)]]
    bw_reps = [(hi - lo) / max(t - t_lo, 1e-12) for t in per_size[_key(per_size, hi)]]
    return fixed, bw, spread(fixed_reps), spread(bw_reps)


def _key(d: dict[Any, Any], n: int) -> Any:
    return n if n in d else str(n)  # JSON turns int keys into strings


def summarize(meas: dict[str, Any]) -> dict[str, Any]:
    """The medians a later run needs as its baseline (kept in the profile's ``measurements``)."""
    out: dict[str, Any] = {k: statistics.median(v) for k, v in meas["launches"].items()}
    out["copy_s_by_size"] = {k: {str(n): statistics.median(v) for n, v in per.items()}
                             for k, per in meas["copies"].items()}
    out["blocking"] = {k: v for k, v in meas["blocking"].items() if not k.endswith("_call_s")}
    out["serialization_ratio"] = statistics.median(meas["serialization"]["ratio"])
    ev = meas["events"]
    out["events"] = {k: ev[k] for k in ("reference_ms", "invalid", "negative", "n")}
    out["host_register"] = meas["host_register"]
    out["multicast"] = meas["multicast"]
    return out


def derive_profile(meas: dict[str, Any], *, name: str, cc: bool, method: str,
                   baseline: dict[str, Any] | None = None, baseline_note: str = "",
                   provenance: dict[str, Any] | None = None,
                   paired: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """A profile JSON (what ``load_profile`` accepts) from ``measure()``'s output.

    ``baseline``: ``summarize()`` of a CC-off run (or a calibrated CC-off profile's ``measurements``),
    for the extras of a CC profile; ``paired``: per-repetition CC-minus-off differences
    (:func:`~.measurements.paired_launches`), preferred when given. ``method``: how the run was taken (for each value's source)."""
    base = BUILTIN["h100" if cc else "off"]
    prof: dict[str, Any] = {"name": name, "base": base.name, "cc": cc,
                            "description": f"calibrated by cc-runtime calibrate ({method})"}
    sources: dict[str, str] = {}
    spreads: dict[str, Any] = {}
    for direction, pinned in COPY_KINDS:
        fixed_f, bw_f = _FIELD[(direction, pinned)]
        fixed, bw, fs, bs = fit_copy(meas["copies"][copy_key(direction, pinned)])
        prof[fixed_f], prof[bw_f] = fixed, bw
        spreads[fixed_f], spreads[bw_f] = fs, bs
        what = f"{'pinned' if pinned else 'pageable'} {direction.upper()}"
        sources[fixed_f] = f"calibrate ({method}): {what} copy time at the smallest size, host wall clock"
        sources[bw_f] = f"calibrate ({method}): {what} slope between the smallest and largest size"
    for extra, key in _EXTRAS.items():
        reps = meas["launches"][key]
        if not cc:
            prof[extra] = 0.0
            sources[extra] = f"calibrate ({method}): CC off, no extra (absolute {key} in measurements)"
        elif paired is not None and paired.get(key):
            prof[extra] = max(0.0, statistics.median(paired[key]))
            spreads[extra] = spread(paired[key])
            sources[extra] = (f"calibrate ({method}): host time per op minus the CC-off device's in the same "
                              f"repetition ({baseline_note})")
        elif baseline is not None and key in baseline:
            ref = float(baseline[key])
            prof[extra] = max(0.0, statistics.median(reps) - ref)
            spreads[extra] = spread(r - ref for r in reps)
            sources[extra] = f"calibrate ({method}): host time per op minus the CC-off baseline ({baseline_note})"
        else:
            prof[extra] = getattr(base, extra)
            sources[extra] = (f"not derived: no CC-off baseline (pass --baseline); {base.name} value kept; "
                              f"absolute {key} in measurements")
    ev = meas["events"]
    prof["event_corrupt_prob"] = ev["invalid"] / ev["n"] if ev["n"] else 0.0
    prof["event_negative_prob"] = ev["negative"] / ev["invalid"] if ev["invalid"] else 0.0
    if len(ev["invalid_rel_errors"]) >= 2:
        prof["event_rel_sigma"] = statistics.pstdev(ev["invalid_rel_errors"])
    sources["event_*"] = (f"calibrate ({method}): {ev['n']} elapsed_time readings around the same work; invalid = "
                          "negative or > 5% from the median (a lower bound: small corruptions go unseen)")
    for switch, (step, key) in SWITCH_MEASURES.items():
        value = meas[step].get(key)
        if value is None:
            prof[switch] = getattr(base, switch)
            sources[switch] = f"not measured ({meas[step].get('error', 'unavailable')}); {base.name} value kept"
        else:
            prof[switch] = bool(value)
            sources[switch] = f"calibrate ({method}): observed ({step})" + _CAVEATS.get(switch, "")
    prof["sources"] = sources
    prof["spread"] = spreads
    prof["provenance"] = provenance or {}
    prof["measurements"] = summarize(meas)
    return prof


def compare(recovered: dict[str, Any], reference: Profile, meas: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    """Rows (one per parameter, then one per copy kind and size) and the largest relative error.

    Numeric parameters: ``|recovered - reference| / reference``; switches: 0 when equal, 1 when not;
    sampled probabilities are shown but left out of the maximum. Copy rows compare the measured time
    per copy with the reference profile's line at that size."""
    rows: list[dict[str, Any]] = []
    worst = 0.0
    for f in NUMERIC + SAMPLED:
        ref, got = float(getattr(reference, f)), float(recovered[f])
        err = abs(got - ref) / abs(ref) if ref else abs(got - ref)
        counted = f not in SAMPLED
        if counted:
            worst = max(worst, err)
        rows.append({"parameter": f, "profile": ref, "recovered": got, "rel_error": err,
                     "in_max": counted, "spread": recovered.get("spread", {}).get(f)})
    for f in SWITCH_MEASURES:
        ref_b, got_b = bool(getattr(reference, f)), bool(recovered[f])
        err = 0.0 if ref_b == got_b else 1.0
        worst = max(worst, err)
        rows.append({"parameter": f, "profile": ref_b, "recovered": got_b, "rel_error": err, "in_max": True})
    for direction, pinned in COPY_KINDS:
        per = meas["copies"][copy_key(direction, pinned)]
        for n in sorted(int(k) for k in per):
            reps = per[_key(per, n)]
            model = reference.copy_cost_s(n, direction, pinned)
            got = statistics.median(reps)
            err = abs(got - model) / model
            worst = max(worst, err)
            rows.append({"parameter": f"{copy_key(direction, pinned)}_time_s", "bytes": n, "profile": model,
                         "recovered": got, "rel_error": err, "in_max": True, "spread": spread(reps)})
    return rows, worst
