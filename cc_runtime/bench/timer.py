"""``cc-runtime bench timer``: is %globaltimer a faithful kernel timer, and does it fix autotuning?

1. Agreement: GEMMs from ~20 us to ~20 ms, eager and CUDA graph, timed by CUDA events and by
   %globaltimer stamps in interleaved trials (CC off: events are correct there). Each interval covers
   enough back-to-back calls to span >= 2 ms, as the peers' tests do (FlashInfer PR 3870, TensorRT-LLM
   PR 11657). ``max_rel_diff_vs_events`` = worst |globaltimer mean - event mean| / event mean
   (goal 0.02; peers accept 0.05).
2. Ranking: four GEMM configurations whose true order is known by construction (K dimension);
   a ``min``-keeping tuner timed by CUDA events whose readings go through the CC emulator's corruption
   (``EventCorruption(profile, seed)``), against cc_runtime's globaltimer ``measure``. 50 trials each:
   ``ranking_accuracy`` (globaltimer) and ``ranking_accuracy_events``.

On a CPU-only machine both parts run on a fake clock that stands in for the GPU and its %globaltimer
register: "simulated", and labelled so. Those results are what the timing code computes on that clock,
not device measurements, and their summary keys start with ``fake_clock_``; the fake timer's settings
(granularity, stamp cost) go under ``model``. One wall-clock row times a real CPU function
(``wall_clock_rel_diff_vs_perf_counter``). Agreement values are the worst kernel's per-trial relative
difference, median [min-max] over trials.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from . import partial
from .common import BenchContext, BenchResult, modelled, progress, spread

DESCRIPTION = "%globaltimer vs CUDA events (GEMM 20 us..20 ms, eager+graph) and autotune ranking under corruption"

COLUMNS = ["part", "kernel", "mode", "event_ms", "globaltimer_ms", "rel_diff", "rel_diff_trials", "peer_bound",
           "trials", "calls", "accuracy"]
MIN_SPAN_MS = 2.0
RANK_TRIALS = 50


def add_arguments(parser: Any) -> None:
    parser.add_argument("--trials", type=int, default=None, help="interleaved agreement trials per kernel")
    parser.add_argument("--rank-trials", type=int, default=RANK_TRIALS, help="ranking trials (default 50)")


# -- shared maths -------------------------------------------------------------------------------------
def peer_bound_ms(ev: list[float], gt: list[float]) -> float:
    """FlashInfer PR 3870's pass bound: max(0.01 ms, 5% of the event mean, 3x the combined SEM)."""
    m = statistics.fmean(ev)
    sem = math.sqrt(sum(statistics.variance(x) / len(x) if len(x) > 1 else 0.0 for x in (ev, gt)))
    return max(0.01, 0.05 * m, 3 * sem)


def agreement_row(kernel: str, mode: str, ev: list[float], gt: list[float], calls: int) -> dict[str, Any]:
    """Means over the trials, and ``rel_diff_trials``: |globaltimer - event| / event per interleaved trial."""
    ev_mean, gt_mean = statistics.fmean(ev), statistics.fmean(gt)
    per_trial = [abs(g - e) / e for e, g in zip(ev, gt, strict=True) if e > 0]
    return {"part": "agreement", "kernel": kernel, "mode": mode, "event_ms": ev_mean, "globaltimer_ms": gt_mean,
            "rel_diff": abs(gt_mean - ev_mean) / ev_mean if ev_mean > 0 else math.nan,
            "rel_diff_trials": spread(per_trial) if per_trial else None,
            "peer_bound": "ok" if abs(gt_mean - ev_mean) <= peer_bound_ms(ev, gt) else "FAIL",
            "trials": len(ev), "calls": calls}


def interleaved(timers: tuple[Any, Any], run: Callable[[], None], trials: int, calls: int,
                sync: Callable[[], None]) -> tuple[list[float], list[float]]:
    """``trials`` intervals per timer over ``run()`` (``calls`` calls), alternating which goes first."""
    marks: list[tuple[int, Any, Any]] = []
    for t in range(trials):
        order = (0, 1) if t % 2 == 0 else (1, 0)
        for which in order:
            s, e = timers[which].event(), timers[which].event()
            s.record()
            run()
            e.record()
            marks.append((which, s, e))
    sync()
    out: tuple[list[float], list[float]] = ([], [])
    for which, s, e in marks:
        out[which].append(s.elapsed_time(e) / calls)
    return out


# -- GPU ------------------------------------------------------------------------------------------------
class CorruptedEvent:
    """A real CUDA event whose ``elapsed_time`` goes through the emulator's CC corruption."""

    def __init__(self, event: Any, corrupt: Callable[[float], float]) -> None:
        self._event, self._corrupt = event, corrupt

    def record(self, stream: Any = None) -> None:
        self._event.record(stream) if stream is not None else self._event.record()

    def elapsed_time(self, other: CorruptedEvent) -> float:
        return float(self._corrupt(self._event.elapsed_time(other._event)))

    def synchronize(self) -> None:
        self._event.synchronize()


class CorruptedEventTimer:
    """CUDA events as an application under CC would read them (emulated corruption)."""

    name = "cuda_event(emulated CC corruption)"

    def __init__(self, base: Any, corrupt: Callable[[float], float]) -> None:
        self.base, self.corrupt = base, corrupt

    def event(self) -> CorruptedEvent:
        return CorruptedEvent(self.base.event(), self.corrupt)

    def pairs(self, n: int) -> list[tuple[CorruptedEvent, CorruptedEvent]]:
        return [(self.event(), self.event()) for _ in range(n)]

    def synchronize(self) -> None:
        self.base.synchronize()


GEMM_SIZES = [2048, 4096, 8192, 16384]  # bf16 n x n x n on an H100: ~25 us, ~0.2 ms, ~1.7 ms, ~14 ms


def _gpu_agreement(ctx: BenchContext, gt: Any, ev: Any, trials: int) -> list[dict[str, Any]]:
    import torch

    from ..timer import measure

    rows = []
    dev = torch.device("cuda", torch.cuda.current_device())
    for n in progress(GEMM_SIZES, "agreement"):
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        c = torch.empty(n, n, device=dev, dtype=torch.bfloat16)

        def mm(a: Any = a, b: Any = b, c: Any = c) -> None:
            torch.mm(a, b, out=c)

        est = measure(mm, warmup=2, rep=5, timer=gt, flush_l2=False).median
        calls = max(1, min(200, math.ceil(MIN_SPAN_MS / est))) if est > 0 else 50

        def eager(calls: int = calls, mm: Callable[[], None] = mm) -> None:
            for _ in range(calls):
                mm()

        e_ms, g_ms = interleaved((ev, gt), eager, trials, calls, torch.cuda.synchronize)
        rows.append(agreement_row(f"gemm bf16 {n}^3", "eager", e_ms, g_ms, calls))

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            eager()  # warm up on the capture stream, as torch's graph docs ask
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            eager()
        torch.cuda.synchronize()
        e_ms, g_ms = interleaved((ev, gt), graph.replay, trials, calls, torch.cuda.synchronize)
        rows.append(agreement_row(f"gemm bf16 {n}^3", "graph", e_ms, g_ms, calls))
        partial.measured(rows[-2])  # on disk at once: a run killed at its cap keeps the sizes it finished
        partial.measured(rows[-1])
        del graph, a, b, c
    torch.cuda.empty_cache()
    return rows


def gpu_rank_configs() -> tuple[dict[str, Callable[[], None]], str]:
    """Four GEMM 'configurations' (4096 x K x 4096); the smallest K is the fastest by construction."""
    import torch

    dev = torch.device("cuda", torch.cuda.current_device())
    configs: dict[str, Callable[[], None]] = {}
    for k in (3584, 4096, 4608, 5120):
        a = torch.randn(4096, k, device=dev, dtype=torch.bfloat16)
        b = torch.randn(k, 4096, device=dev, dtype=torch.bfloat16)
        c = torch.empty(4096, 4096, device=dev, dtype=torch.bfloat16)

        def mm(a: Any = a, b: Any = b, c: Any = c) -> None:
            torch.mm(a, b, out=c)

        configs[f"K={k}"] = mm
    return configs, "K=3584"


def gpu_ranking(gt: Any, ev: Any, profile: Any, trials: int, seed: int) -> tuple[float, float]:
    from ..emulator.events import EventCorruption
    from ..timer.ranking import accuracy, cc_style_time, event_style_time, pick

    configs, right = gpu_rank_configs()
    for fn in configs.values():
        fn()

    def event_trial(i: int) -> str:
        timer = CorruptedEventTimer(ev, EventCorruption(profile, seed=seed * 1000 + i).corrupt)
        return pick(configs, lambda fn: event_style_time(timer, fn, iters=10))  # type: ignore[arg-type]

    def gt_trial(i: int) -> str:
        return pick(configs, lambda fn: cc_style_time(gt, fn, warmup=1.0, rep=3.0))

    return accuracy(trials, gt_trial, right), accuracy(trials, event_trial, right)


# -- CPU (simulated) -------------------------------------------------------------------------------------
SIM_KERNELS_MS = [0.02, 0.2, 2.0, 20.0]
FAKE_GRANULARITY_NS = 32  # the fake %globaltimer's tick: H100's 32 ns (NVIDIA developer forum: GH100 and later
# update %globaltimer every 32 ns), set, not measured
FAKE_STAMP_NS = 1500  # what one fake stamp costs the fake device: set, not measured


def _sim_agreement(trials: int, seed: int) -> list[dict[str, Any]]:
    from ..timer import FakeClock, FakeTimer

    rows = []
    rng = random.Random(seed)
    for ms in SIM_KERNELS_MS:
        for mode in ("eager", "graph"):
            clock = FakeClock()
            gt = FakeTimer(clock, granularity_ns=FAKE_GRANULARITY_NS, stamp_cost_ns=FAKE_STAMP_NS, name="fake_globaltimer")
            ev = FakeTimer(clock, granularity_ns=500, corrupt=lambda x: x, name="fake_cuda_event")
            calls = max(1, min(200, math.ceil(MIN_SPAN_MS / ms)))
            launch_ns = 2000 if mode == "eager" else 0  # a graph replays without per-call launch gaps

            def run(calls: int = calls, ms: float = ms, clock: Any = clock, launch_ns: int = launch_ns) -> None:
                for _ in range(calls):
                    clock.advance(ms * 1e6 * (1 + rng.uniform(-0.01, 0.01)) + launch_ns)

            e_ms, g_ms = interleaved((ev, gt), run, trials, calls, lambda: None)
            rows.append(agreement_row(f"fake clock: {ms:g} ms kernel", mode, e_ms, g_ms, calls))
    return rows


def _wall_row(trials: int) -> dict[str, Any]:
    """A CPU function timed by the wall-clock Timer vs bare perf_counter."""
    from ..timer import WallClockTimer

    data = list(range(20_000))

    def work() -> None:
        sum(x * x for x in data)

    wall = WallClockTimer()
    gt_ms, ev_ms = [], []
    for _ in range(trials):
        s, e = wall.event(), wall.event()
        s.record()
        work()
        e.record()
        gt_ms.append(s.elapsed_time(e))
        t0 = time.perf_counter()
        work()
        ev_ms.append((time.perf_counter() - t0) * 1e3)
    row = agreement_row("cpu function (wall clock Timer vs perf_counter)", "cpu", ev_ms, gt_ms, 1)
    row["part"] = "agreement (wall clock)"
    return row


def _sim_ranking(profile: Any, trials: int, seed: int) -> tuple[float, float]:
    from ..emulator.events import EventCorruption
    from ..timer import FakeClock, FakeTimer
    from ..timer.ranking import FAKE_FASTEST, accuracy, cc_style_time, event_style_time, fake_configs, pick

    def event_trial(i: int) -> str:
        clock, rng = FakeClock(), random.Random(seed * 1000 + i)
        timer = FakeTimer(clock, corrupt=EventCorruption(profile, seed=seed * 1000 + i).corrupt)
        return pick(fake_configs(clock, rng), lambda fn: event_style_time(timer, fn))

    def gt_trial(i: int) -> str:
        clock, rng = FakeClock(), random.Random(seed * 1000 + i)
        timer = FakeTimer(clock, granularity_ns=FAKE_GRANULARITY_NS, stamp_cost_ns=FAKE_STAMP_NS)
        return pick(fake_configs(clock, rng), lambda fn: cc_style_time(timer, fn))

    return accuracy(trials, gt_trial, FAKE_FASTEST), accuracy(trials, event_trial, FAKE_FASTEST)


# -- entry point ---------------------------------------------------------------------------------------
def run(ctx: BenchContext) -> BenchResult:
    from ..emulator.profiles import load_profile

    profile = load_profile(ctx.emulate)
    trials = int(ctx.extra.get("trials") or (6 if ctx.quick else 12))
    rank_trials = int(ctx.extra.get("rank_trials") or RANK_TRIALS)
    notes: list[str] = []
    summary: dict[str, Any] = {}
    model: dict[str, Any] = {}
    if ctx.device == "cuda":
        import torch

        from ..timer import CudaEventTimer, get_timer

        gt = get_timer(kind="globaltimer")
        ev = CudaEventTimer(torch.cuda.current_device())
        if gt.name != "globaltimer":
            from ..timer import failures

            notes.append(f"globaltimer unavailable, the 'globaltimer' column is {gt.name}: {failures()}")
        else:
            notes.append(f"globaltimer via {getattr(gt, 'backend', '?')}; self-test {gt.describe()['self_test']}")
        rows = _gpu_agreement(ctx, gt, ev, trials)
        acc_gt, acc_ev = gpu_ranking(gt, ev, profile, rank_trials, ctx.seed)
        title = f"%globaltimer vs CUDA events on {torch.cuda.get_device_name()} (CC arms: emulated {ctx.emulate})"
        notes.append("agreement: CC off, real CUDA events; ranking: event readings corrupted by the CC emulator "
                     f"(profile {ctx.emulate}), globaltimer readings real")
        summary.update(_agreement_summary(rows, "max_rel_diff_vs_events", "agreement"),
                       ranking_accuracy=_share(acc_gt, rank_trials), ranking_accuracy_events=_share(acc_ev, rank_trials))
        # Measured by the timer's self-test at construction (one measurement each).
        summary.update(granularity_us=spread([gt.granularity_ms * 1e3]),
                       stamp_overhead_us=spread([gt.overhead_ms * 1e3]))
    else:
        rows = _sim_agreement(trials, ctx.seed)
        rows.append(_wall_row(max(trials, 5)))
        acc_gt, acc_ev = _sim_ranking(profile, rank_trials, ctx.seed)
        title = "%globaltimer vs CUDA events: SIMULATED (fake clock stands in for the GPU and %globaltimer)"
        notes.append("simulated: no GPU; a fake clock stands in for the GPU and its %globaltimer register, "
                     "fake events read the same clock (fake_clock_* keys: what the timing code computes on "
                     "that clock, not a device measurement); the wall-clock row times a CPU function")
        notes.append("fake-clock ranking: 4 configurations 2% apart, each run +-4% jitter and 10% of runs 30% "
                     "slower (cc_runtime.timer.ranking.fake_configs)")
        summary.update(_agreement_summary(rows, "fake_clock_max_rel_diff_vs_events", "agreement"),
                       **_agreement_summary(rows, "wall_clock_rel_diff_vs_perf_counter", "agreement (wall clock)"),
                       fake_clock_ranking_accuracy=_share(acc_gt, rank_trials),
                       fake_clock_ranking_accuracy_events=_share(acc_ev, rank_trials))
        model.update(granularity_us=modelled(FAKE_GRANULARITY_NS / 1e3, "fake timer setting (H100 %globaltimer "
                                             "tick, NVIDIA developer forum); a GPU run measures it"),
                     stamp_overhead_us=modelled(FAKE_STAMP_NS / 1e3, "fake timer setting; a GPU run measures it"))
    rows.append({"part": "ranking", "kernel": "4 configs, min-keeping tuner",
                 "mode": "globaltimer", "trials": rank_trials, "accuracy": acc_gt})
    rows.append({"part": "ranking", "kernel": "4 configs, min-keeping tuner",
                 "mode": f"events + emulated CC ({ctx.emulate})", "trials": rank_trials, "accuracy": acc_ev})
    return BenchResult(benchmark="timer", summary=summary, model=model, rows=rows, columns=COLUMNS, notes=notes,
                       title=title)


def _share(value: float, trials: int) -> dict[str, Any]:
    """A measured fraction of ``trials`` (the trial count travels with it, not as a summary key of its own)."""
    return {"value": value, "n": trials}


def _agreement_summary(rows: list[dict[str, Any]], key: str, part: str) -> dict[str, Any]:
    """The worst kernel's (highest median) per-trial relative difference, with its spread."""
    cands = [r for r in rows if r.get("part") == part and r.get("rel_diff_trials")]
    if not cands:
        return {key: None}
    worst = max(cands, key=lambda r: r["rel_diff_trials"]["median"])
    return {key: {**worst["rel_diff_trials"], "kernel": f"{worst['kernel']} ({worst['mode']})"}}
