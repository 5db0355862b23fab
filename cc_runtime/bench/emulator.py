"""``cc-runtime bench emulator``: does the CC emulator charge what its profile says?

Copy time by size (64 B .. 64 MiB; H2D and D2H) and eager launch overhead, emulation off vs on,
against the model ``on = base + profile cost`` (copies: ``base + fixed + bytes / bandwidth``,
launches: ``base + launch_extra_s``). ``max_rel_error_vs_model`` is the worst copy error over all
sizes and both directions (goal on a GPU: <= 0.10).

On a GPU the base is the same torch call with emulation off (emulated results; pinned host memory).
On a CPU-only machine everything runs on the simulated device and says "simulated": there the base
is the same SimDevice call under a zero-cost CC profile, so the check measures whether the simulated
device charges the profile's time on top of its own code path. Under real CC the emulator refuses;
then the real hardware is measured against the profile's absolute model and labelled "real CC".
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from .common import BenchContext, BenchResult, progress

DESCRIPTION = "CC emulator accuracy: copy time by size and launch overhead, off vs on vs the profile model"

KiB, MiB = 1024, 1024 * 1024
FULL_SIZES = [64, 256, KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB, 64 * MiB]
QUICK_SIZES = [64, 4 * KiB, 256 * KiB, 4 * MiB, 64 * MiB]
COLUMNS = ["direction", "size", "off_us", "on_us", "model_us", "rel_error", "on_GBps"]


def add_arguments(parser: Any) -> None:
    parser.add_argument("--reps", type=int, default=None, help="repetitions per size (median is reported)")


def _median_time(fn: Callable[[], Any], reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _size_label(n: int) -> str:
    for unit, div in (("MiB", MiB), ("KiB", KiB)):
        if n >= div:
            return f"{n // div} {unit}"
    return f"{n} B"


def _reps(ctx: BenchContext, nbytes: int) -> int:
    explicit = ctx.extra.get("reps")
    if explicit:
        return int(explicit)
    if nbytes >= 16 * MiB:
        return 3 if ctx.quick else 7
    return 7 if ctx.quick else 25


def run(ctx: BenchContext) -> BenchResult:
    from ..emulator import load_profile

    profile = load_profile(ctx.emulate)
    if ctx.device == "cuda":
        return _run_cuda(ctx, profile)
    return _run_simulated(ctx, profile)


# -- simulated device (CPU-only machines) -----------------------------------------------------

def _run_simulated(ctx: BenchContext, profile: Any) -> BenchResult:
    import torch

    from ..emulator import SimDevice

    zero = dataclasses.replace(profile, name="zero-cost", h2d_fixed_s=0.0, d2h_fixed_s=0.0,
                               h2d_bandwidth_Bps=float("inf"), d2h_bandwidth_Bps=float("inf"),
                               launch_extra_s=0.0, d2d_extra_s=0.0)
    sizes = QUICK_SIZES if ctx.quick else FULL_SIZES
    rows: list[dict[str, Any]] = []
    devs = {"off": SimDevice(None, "sim-off"), "base": SimDevice(zero, "sim-base"),
            "on": SimDevice(profile, "sim-on", seed=ctx.seed)}
    # The simulated copy is a host memcpy; torch's intra-op threads turn a 256 KiB one into ~8 ms on a
    # busy 2-core machine (OpenMP hand-offs), which drowns the costs being checked.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for n in progress(sizes, "emulator copies (simulated)"):
            host = torch.empty(n // 4, dtype=torch.float32)
            for direction in ("h2d", "d2h"):
                t: dict[str, float] = {}
                for arm, sim in devs.items():
                    dev = sim.empty(n // 4, dtype=torch.float32)
                    dst, src = (dev, host) if direction == "h2d" else (host, dev)

                    def copy(sim: Any = sim, dst: Any = dst, src: Any = src) -> None:
                        sim.copy_(dst, src)

                    t[arm] = _median_time(copy, _reps(ctx, n))
                # The base already pays the CC-off copy (a SimDevice CC copy costs OFF + profile):
                # the model adds only the profile's cost, as on the GPU.
                rows.append(_row(direction, n, t["off"], t["on"], t["base"] + profile.copy_cost_s(n, direction)))
        launch = {}
        for arm, sim in devs.items():
            def burst(sim: Any = sim) -> None:
                for _ in range(100):
                    sim.launch(None, 0.0)
                sim.synchronize()

            launch[arm] = _median_time(burst, 5 if ctx.quick else 15) / 100
        launch_model = launch["base"] + profile.launch_extra_s
        readings = _sim_event_readings(devs["on"])
    finally:
        torch.set_num_threads(threads)
        for sim in devs.values():
            sim.shutdown()
    rows.append(_row("launch", 0, launch["off"], launch["on"], launch_model))
    return _result(ctx, profile, rows, readings, kind="simulated",
                   notes=["simulated device (CPU threads): the base is the same SimDevice call under a "
                          "zero-cost CC profile; off = SimDevice without CC"])


def _sim_event_readings(sim: Any) -> list[float]:
    start, end = sim.Event(enable_timing=True), sim.Event(enable_timing=True)
    start.record()
    sim.launch(None, 0.001)
    end.record()
    end.synchronize()
    return [start.elapsed_time(end) for _ in range(200)]


# -- CUDA --------------------------------------------------------------------------------------

def _run_cuda(ctx: BenchContext, profile: Any) -> BenchResult:
    import torch

    from ..detect import cc_state
    from ..emulator import OFF
    from ..emulator import cuda as ec

    real_cc = cc_state().real
    own = False
    em = None
    if not real_cc:
        em = ec.active()
        if em is None:
            em = ec.enable(profile, seed=ctx.seed)
            own = True
        profile = em.profile

    arm = _arms(em)
    sizes = QUICK_SIZES if ctx.quick else FULL_SIZES
    rows: list[dict[str, Any]] = []
    stream = torch.cuda.current_stream()
    try:
        for n in progress(sizes, "emulator copies (cuda)"):
            host = torch.empty(n // 4, dtype=torch.float32).pin_memory()
            dev = torch.empty(n // 4, dtype=torch.float32, device="cuda")
            for direction in ("h2d", "d2h"):
                dst, src = (dev, host) if direction == "h2d" else (host, dev)

                def copy(dst: Any = dst, src: Any = src) -> None:
                    dst.copy_(src, non_blocking=True)
                    stream.synchronize()

                t = {}
                for name in (["on"] if real_cc else ["off", "on"]):
                    with arm(name == "on"):
                        t[name] = _median_time(copy, _reps(ctx, n))
                if real_cc:
                    model = OFF.copy_cost_s(n, direction) + profile.copy_cost_s(n, direction)
                    rows.append(_row(direction, n, float("nan"), t["on"], model))
                else:
                    rows.append(_row(direction, n, t["off"], t["on"], t["off"] + profile.copy_cost_s(n, direction)))
        x = torch.zeros(1, device="cuda")

        def burst() -> None:
            for _ in range(200):
                x.add_(1)
            stream.synchronize()

        launch = {}
        for name in (["on"] if real_cc else ["off", "on"]):
            with arm(name == "on"):
                launch[name] = _median_time(burst, 5 if ctx.quick else 15) / 200
        off = launch.get("off", float("nan"))
        rows.append(_row("launch", 0, off, launch["on"], (off if not real_cc else 4.9e-6) + profile.launch_extra_s))
        rows.append(_graph_row(ctx, profile, arm, real_cc))
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(1_000_000)
        end.record()
        end.synchronize()
        readings = [start.elapsed_time(end) for _ in range(200)]
    finally:
        if own:
            ec.disable()
    return _result(ctx, profile, rows, readings, kind="real CC" if real_cc else "emulated",
                   hook_overhead_s=em.hook_overhead_s if em is not None else None,
                   notes=["pinned host memory; copy = copy_(non_blocking=True) + stream sync; base = the same "
                          "call with emulation off" if not real_cc else
                          "real CC: emulator refused; measured against the profile's absolute model"])


def _arms(em: Any) -> Callable[[bool], Any]:
    """``with arm(False):`` emulation fully off (hooks inert, this thread's launch mode popped)."""

    @contextlib.contextmanager
    def arm(on: bool) -> Iterator[None]:
        if em is None:
            yield
            return
        prev = em.active
        em.active = on
        try:
            if on:
                yield
            else:
                from torch.utils._python_dispatch import _disable_current_modes

                with _disable_current_modes():
                    yield
        finally:
            em.active = prev

    return arm


def _graph_row(ctx: BenchContext, profile: Any, arm: Callable[[bool], Any], real_cc: bool) -> dict[str, Any]:
    import torch

    x = torch.zeros(16, device="cuda")
    g = torch.cuda.CUDAGraph()
    with arm(False):  # warm up and capture without emulation; the replay is what is charged
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                x.add_(1)
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(g):
            for _ in range(10):
                x.add_(1)
    stream = torch.cuda.current_stream()

    def replays() -> None:
        for _ in range(50):
            g.replay()
        stream.synchronize()

    t = {}
    for name in (["on"] if real_cc else ["off", "on"]):
        with arm(name == "on"):
            t[name] = _median_time(replays, 5) / 50
    off = t.get("off", float("nan"))
    return _row("graph_replay", 0, off, t["on"], off + profile.graph_replay_extra_s)


# -- shared ------------------------------------------------------------------------------------

def _row(direction: str, n: int, off: float, on: float, model: float) -> dict[str, Any]:
    return {
        "direction": direction,
        "size": _size_label(n) if n else "-",
        "bytes": n,
        "off_us": off * 1e6,
        "on_us": on * 1e6,
        "model_us": model * 1e6,
        "rel_error": abs(on - model) / model if model > 0 else float("nan"),
        "on_GBps": n / on / 1e9 if n and on > 0 else float("nan"),
    }


def _result(ctx: BenchContext, profile: Any, rows: list[dict[str, Any]], readings: list[float], kind: str,
            notes: list[str], hook_overhead_s: float | None = None) -> BenchResult:
    copies = [r for r in rows if r["direction"] in ("h2d", "d2h")]
    by = {(r["direction"], r["bytes"]): r for r in copies}
    biggest = max(r["bytes"] for r in copies)
    launch = next(r for r in rows if r["direction"] == "launch")
    summary: dict[str, float | int | None] = {
        "max_rel_error_vs_model": max(r["rel_error"] for r in copies),
        "max_rel_error_small_copies": max(r["rel_error"] for r in copies if r["bytes"] <= 64 * KiB),
        "h2d_on_GBps_largest": by[("h2d", biggest)]["on_GBps"],
        "d2h_on_GBps_largest": by[("d2h", biggest)]["on_GBps"],
        "h2d_64B_on_us": by.get(("h2d", 64), {}).get("on_us"),
        "launch_extra_us_measured": launch["on_us"] - launch["off_us"],
        "launch_extra_us_model": profile.launch_extra_s * 1e6,
        "launch_rel_error_vs_model": launch["rel_error"],
        "event_negative_fraction": sum(r < 0 for r in readings) / len(readings) if readings else None,
        "simulated": int(kind == "simulated"),
    }
    if hook_overhead_s is not None:
        summary["launch_hook_overhead_us"] = hook_overhead_s * 1e6
    graph = next((r for r in rows if r["direction"] == "graph_replay"), None)
    if graph is not None:
        summary["graph_replay_extra_us_measured"] = graph["on_us"] - graph["off_us"]
    if ctx.plot_path:
        try:
            _plot(ctx.plot_path, copies, profile, kind)
        except Exception as exc:  # noqa: BLE001 - a missing matplotlib must not lose the numbers
            notes.append(f"plot not written: {type(exc).__name__}: {exc}")
    return BenchResult(
        benchmark="emulator",
        summary=summary,
        rows=rows,
        columns=COLUMNS,
        notes=notes,
        environment={"emulator_profile": profile.name, "device_kind": "simulated" if kind == "simulated"
                     else "cuda", "results": kind,
                     # the profile's own name, also when --emulate named a JSON file
                     "cc": "on" if kind == "real CC" else profile.label},
        title=f"CC emulator ({kind}, profile {profile.name}): copy and launch time, off vs on vs model",
    )


def _plot(path: str, copies: list[dict[str, Any]], profile: Any, kind: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, direction in zip(axes, ("h2d", "d2h"), strict=True):
        rs = [r for r in copies if r["direction"] == direction]
        xs = [r["bytes"] for r in rs]
        for key, style, label in (("off_us", "o-", "CC off"), ("on_us", "s-", f"emulated {profile.name}"),
                                  ("model_us", "k--", "model")):
            ax.plot(xs, [r[key] for r in rs], style, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{direction.upper()} copy time ({kind})")
        ax.set_xlabel("bytes")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("microseconds per copy")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
