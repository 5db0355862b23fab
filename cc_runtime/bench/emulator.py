"""``cc-runtime bench emulator``: calibrate's measurements taken under the emulator, against a profile.

The measurements are calibrate's own (:mod:`cc_runtime.calibrate.measurements`: host wall-clock timing
of copies 64 B - 64 MiB pinned and pageable, launches, graph replays, small D2D copies, blocking
order, serialisation, event timings, refusals), never the emulator's formula. What the comparison
means depends on where the profile came from:

- ``--against PROFILE.json`` measured by ``cc-runtime calibrate`` on real CC hardware (its provenance
  says so): the emulator (GPU) or the simulated device (CPU) plays PROFILE, calibrate measures it, and
  every recovered parameter and every copy size is compared with PROFILE:
  ``summary.max_rel_error_vs_profile`` (goal <= 0.10 on a GPU).
- any other profile (``--emulate``, a built-in, a hand-written JSON, or a profile calibrated on the
  simulated device or under the emulator): the same round trip is *imposition*, how exactly the
  emulator (``emulated_imposition_max_rel_error``) or the simulated device
  (``simulated_imposition_max_rel_error``) imposes a profile it was given. It says nothing about
  whether the profile is right.
- ``--against-published``: each published CC measurement in ``cc_runtime/emulator/published.json``
  is re-run as a micro-benchmark under the profile it belongs to (:mod:`.published`): the rows
  compare the emulation with the hardware figure, per source.
- under real CC the emulator refuses; the hardware itself is measured against the profile
  (``real_cc_max_rel_error_vs_profile``).

Every run also measures ``charge_error_us``: how far the emulator's clock misses a charge of 2-50 us
as a caller sees it, less the cost of timing an empty call measured in the same run.

Extras (launch, graph replay, D2D) need a CC-off baseline: measured in the same run (emulation off,
or the simulated device without CC). ``summary`` holds only measured values with their spread;
``model`` holds the profile's values with their sources.
"""

from __future__ import annotations

import statistics
from typing import Any

from .common import BenchContext, BenchResult, modelled, progress, spread
from .emulator_hook import hook_overhead_summary

DESCRIPTION = ("CC emulator: calibrate's measurements under emulation vs a profile (imposition), "
               "--against-published: vs published hardware figures")
COLUMNS = ["parameter", "bytes", "profile", "recovered", "rel_error", "in_max"]


def _profile_arg(value: str) -> str:
    """A CC profile, checked as ``CC_RUNTIME_EMULATE`` is (the settings registry): a CC-off profile has
    nothing to emulate, so a "fidelity" against it would be meaningless."""
    import argparse

    from ..settings import VARS, SettingsError

    try:
        parsed = VARS["CC_RUNTIME_EMULATE"].parse("--against", value)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if parsed is None:
        raise argparse.ArgumentTypeError("--against needs a CC profile (h100 | h200 | b200 | b300 | /path/profile.json), not off")
    return str(parsed)


def add_arguments(parser: Any) -> None:
    parser.add_argument("--against", metavar="PROFILE.json", default=None, type=_profile_arg,
                        help="emulate this profile and measure it back; summary.max_rel_error_vs_profile when "
                             "it was calibrated on real CC hardware, else *_imposition_max_rel_error")
    parser.add_argument("--against-published", action="store_true",
                        help="re-run each published CC hardware figure's micro-benchmark under its profile; "
                             "summary.max_rel_error_vs_published_fit / _holdout")


#: Charges the clock check times (seconds), and how often each.
CHARGES_S = (2e-6, 5e-6, 10e-6, 20e-6, 50e-6)


def charge_error(reps: int = 41) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    """How far ``clock.charge_s(x)`` misses ``x`` as its caller sees it, for x of 2-50 us.

    Each sample times one call from outside (two ``perf_counter`` reads); the median cost of timing an
    empty call the same way, measured here in between, is subtracted. Returns the spread over the
    charges of each charge's median absolute error (us), one row per charge, and the empty-call cost."""
    import time

    from ..emulator.clock import charge_s

    perf = time.perf_counter

    def noop(_s: float) -> None:
        return None

    def timed(fn: Any, x: float) -> float:
        t0 = perf()
        fn(x)
        return perf() - t0

    for x in CHARGES_S:  # warm up: first calls pay imports, the timer-slack setup and the bookkeeping probe
        charge_s(x)
    empty = statistics.median(timed(noop, 0.0) for _ in range(201))
    rows, medians = [], []
    for x in CHARGES_S:
        errors = sorted(abs(timed(charge_s, x) - x - empty) * 1e6 for _ in range(reps))
        med = statistics.median(errors)
        medians.append(med)
        rows.append({"charge_us": x * 1e6, "median_abs_error_us": med, "p90_abs_error_us": errors[int(0.9 * reps)],
                     "max_abs_error_us": errors[-1], "n": reps})
    return spread(medians), rows, empty * 1e6


def run(ctx: BenchContext) -> BenchResult:
    from ..calibrate import FULL, QUICK
    from ..emulator import load_profile

    charge = charge_error()
    if ctx.extra.get("against_published"):
        from .published import run_published

        return _with_charge_error(run_published(ctx), charge)
    against = ctx.extra.get("against")
    profile = load_profile(against if against else ctx.emulate)
    plan = QUICK if ctx.quick else FULL
    if ctx.device == "cuda":
        kind, meas, recovered, extra_env = _run_cuda(ctx, profile, plan)
    else:
        kind, meas, recovered, extra_env = _run_simulated(ctx, profile, plan)
    return _with_charge_error(_result(ctx, profile, kind, meas, recovered, bool(against), extra_env), charge)


def measured_on_cc_hardware(profile: Any) -> bool:
    """Whether ``profile`` was calibrated on real CC hardware (its provenance says so): only then is a
    round trip through the emulator a comparison with another machine, not imposition."""
    prov = getattr(profile, "provenance", None) or {}
    return (not prov.get("simulated", True) and prov.get("device_kind") == "cuda" and prov.get("cc_state") == "on"
            and not prov.get("cc_devtools"))


def _with_charge_error(result: BenchResult, charge: tuple[dict[str, Any], list[dict[str, Any]], float]) -> BenchResult:
    summary, rows, empty_us = charge
    result.summary["charge_error_us"] = summary
    result.environment["charge_error"] = {
        "method": "clock.charge_s(x) timed by its caller (two perf_counter reads), x = 2, 5, 10, 20, 50 us; "
                  "absolute error less the median cost of timing an empty call measured in the same run; "
                  "summary.charge_error_us spreads each charge's median over the charges",
        "empty_call_timing_us": empty_us,
        "per_charge": rows,
    }
    return result


def _run_simulated(ctx: BenchContext, profile: Any, plan: Any) -> tuple[str, Any, Any, dict[str, Any]]:
    from ..calibrate import SimTarget, derive_profile, measure, summarize

    off = SimTarget(None, seed=ctx.seed)
    try:
        baseline = summarize(measure(off, plan, progress))
    finally:
        off.close()
    target = SimTarget(profile, seed=ctx.seed)
    try:
        meas = measure(target, plan, progress)
    finally:
        target.close()
    recovered = derive_profile(meas, name=f"recovered-{profile.name}", cc=profile.cc,
                               method=f"simulated device playing {profile.name}", baseline=baseline,
                               baseline_note="the simulated CC-off device, same run")
    return "simulated", meas, recovered, {}


def _run_cuda(ctx: BenchContext, profile: Any, plan: Any) -> tuple[str, Any, Any, dict[str, Any]]:
    from ..calibrate import CudaTarget, derive_profile, measure, summarize
    from ..detect import cc_state
    from ..emulator import cuda as ec

    if cc_state().real:
        target = CudaTarget()
        try:
            meas = measure(target, plan, progress)
        finally:
            target.close()
        recovered = derive_profile(meas, name="real-cc", cc=True, method="cuda, real CC")
        return "real CC", meas, recovered, {}
    if ec.active() is not None:
        raise RuntimeError("bench emulator enables the profile itself and measures a CC-off baseline first: "
                           "run it without CC_RUNTIME_EMULATE")
    target = CudaTarget()
    try:
        baseline = summarize(measure(target, plan, progress))
    finally:
        target.close()
    with ec.emulate(profile, seed=ctx.seed) as em:
        target = CudaTarget()
        try:
            meas = measure(target, plan, progress)
        finally:
            target.close()
        hook_us = em.hook_overhead_s * 1e6
    hook_summary = hook_overhead_summary(em)  # its own per-op cost, reported beside fidelity (emulator_hook)
    recovered = derive_profile(meas, name=f"recovered-{profile.name}", cc=True,
                               method=f"cuda, emulating {profile.name}", baseline=baseline,
                               baseline_note="emulation off, same run")
    return "emulated", meas, recovered, {"launch_hook_overhead_us": hook_us, "summary": hook_summary}


def _measured_summary(meas: dict[str, Any], recovered: dict[str, Any]) -> dict[str, Any]:
    """Measured values only, each with its spread over this run's repetitions."""
    out: dict[str, Any] = {}
    for key, per in meas["copies"].items():
        sizes = sorted(per)
        lo, hi = sizes[0], sizes[-1]
        out[f"{key}_{lo}B_us"] = spread(t * 1e6 for t in per[lo])
        out[f"{key}_{hi // (1 << 20)}MiB_GBps"] = spread(hi / t / 1e9 for t in per[hi])
    for extra in ("launch_extra_s", "graph_replay_extra_s", "d2d_extra_s"):
        s = recovered["spread"].get(extra)
        if s:
            out[extra.replace("_s", "_us")] = {k: (v * 1e6 if k != "n" else v) for k, v in s.items()}
    out["copy_serialization_ratio"] = spread(meas["serialization"]["ratio"])
    ev = meas["events"]
    out["event_invalid_fraction"] = {"value": ev["invalid"] / ev["n"], "n": ev["n"]}
    return out


def _result(ctx: BenchContext, profile: Any, kind: str, meas: dict[str, Any], recovered: dict[str, Any],
            against: bool, extra_env: dict[str, Any]) -> BenchResult:
    from ..calibrate import compare

    rows, worst = compare(recovered, profile, meas)
    summary = _measured_summary(meas, recovered)
    other_hardware = against and measured_on_cc_hardware(profile)
    if kind == "real CC":
        key = "real_cc_max_rel_error_vs_profile"
    elif other_hardware:
        key = "max_rel_error_vs_profile"
    else:
        key = f"{kind}_imposition_max_rel_error"
    summary = {key: worst, **extra_env.pop("summary", {}), **summary}
    counted = [r for r in rows if r["in_max"]]
    summary["parameters_within_10pct"] = f"{sum(r['rel_error'] <= 0.10 for r in counted)}/{len(counted)}"
    what = {"simulated": "the simulated device (CPU threads)", "emulated": "the CC emulator on this GPU",
            "real CC": "real CC hardware (the emulator refuses here)"}[kind]
    notes = [f"measured by cc-runtime calibrate's methods on {what}, compared with profile {profile.name!r}"]
    if other_hardware:
        notes.append(f"{key} compares the emulation of a profile calibrated on real CC hardware "
                     f"({profile.provenance.get('gpu')}) with that profile (goal on a GPU: <= 0.10 for every "
                     "parameter and size)")
    elif kind != "real CC":
        origin = ("calibrated on " + ("the simulated device" if profile.provenance.get("simulated") else
                                      f"{profile.provenance.get('gpu')}, CC {profile.provenance.get('cc_state')}")
                  if profile.provenance else "not measured on CC hardware")
        notes.append(f"imposition: {key} says how exactly {what} imposes profile {profile.name!r} ({origin}); it "
                     "is not fidelity to hardware (--against-published compares with published hardware figures; "
                     "--against a profile calibrated on real CC hardware gives max_rel_error_vs_profile)")
    notes.append("event_* probabilities are sampled (binomial spread) and not in the maximum")
    if kind == "simulated":
        slow = [r for r in rows if r.get("bytes", 0) >= 16 << 20 and r["recovered"] > 1.2 * r["profile"]]
        if slow:
            notes.append("the simulated device copies real bytes with this CPU's memcpy: large copies took longer "
                         f"than the profile allows ({len(slow)} rows), so bandwidths above this CPU's memcpy "
                         "cannot be imposed here")
    model = {f: modelled(getattr(profile, f), profile.sources.get(f) or profile.sources.get("event_*", "profile"))
             for f in ("h2d_fixed_s", "d2h_fixed_s", "h2d_bandwidth_Bps", "d2h_bandwidth_Bps", "launch_extra_s",
                       "graph_replay_extra_s", "d2d_extra_s", "event_corrupt_prob")}
    if ctx.plot_path:
        try:
            _plot(ctx.plot_path, meas, profile, kind)
        except Exception as exc:  # noqa: BLE001 - a missing matplotlib must not lose the numbers
            notes.append(f"plot not written: {type(exc).__name__}: {exc}")
    env = {"emulator_profile": profile.name, "device_kind": "simulated" if kind == "simulated" else "cuda",
           "results": kind, "against": profile.name if against else None,
           "comparison": "real CC vs profile" if kind == "real CC" else
                         ("other hardware" if other_hardware else "imposition"),
           "cc": "on" if kind == "real CC" else profile.label, **extra_env}
    return BenchResult(
        benchmark="emulator", summary=summary, rows=rows, columns=COLUMNS, notes=notes, environment=env,
        model=model,
        title=f"CC emulator ({kind}, profile {profile.name}, "
              f"{env['comparison']}): calibrate's measurements vs the profile")


def _plot(path: str, meas: dict[str, Any], profile: Any, kind: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, direction in zip(axes, ("h2d", "d2h"), strict=True):
        for pinned, style in ((True, "o"), (False, "s")):
            key = f"{'pinned' if pinned else 'pageable'}_{direction}"
            per = meas["copies"][key]
            xs = sorted(per)
            ax.plot(xs, [statistics.median(per[n]) * 1e6 for n in xs], style, label=f"{key} measured ({kind})")
            ax.plot(xs, [profile.copy_cost_s(n, direction, pinned) * 1e6 for n in xs], "k--" if pinned else "k:",
                    label=f"{key} profile {profile.name}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{direction.upper()} copy time")
        ax.set_xlabel("bytes")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("microseconds per copy")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
