"""``cc-runtime bench readback``: a decode loop's throughput under CC, with and without cc_runtime's readback.

The loop has the shape of SGLang's overlap scheduler (``event_loop_overlap``): each step does the
scheduler's host work, launches the device step, starts the readback of that step's outputs (token
ids int64, logprobs float32, top-5 logprob values float32 and ids int64), then processes the previous
step's results after ``copy_done.synchronize()``. The arms (:mod:`.readback_arms`, where a peer's
worker is added):

* ``cc_off``: no CC; upstream's per-tensor ``non_blocking`` copies + an event (overlap intact).
* ``cc_off_runtime``: no CC; cc_runtime's path (the readback worker, one coalesced copy).
* ``cc_inline``: CC (emulated / simulated) with upstream's readback: each copy is host-synchronous, so
  the scheduler waits for the step it just launched (the behaviour SGLang PR 15188 measured).
* ``cc_runtime``: CC with :class:`~cc_runtime.readback.ReadbackWorker` + coalescing (one crossing).
* ``worker_floor``: CC, the same worker thread with nothing to copy (see below).

Two ratios, per repetition: ``ratio_vs_cc_off`` = cc_runtime under CC over upstream with CC off (what a
user compares), and ``ratio_vs_cc_off_same_path`` = cc_runtime under CC over cc_runtime's own path
with CC off (the CC overhead left). The first can sit above 1.0 in every repetition without being
noise: upstream's CC-off arm does more on the scheduler thread (four copy launches and an event per
step) than cc_runtime's arm (a hand-off to the worker), so cc_runtime can be faster than that baseline.
That is a difference of code paths, not a gain from CC; the second ratio compares like with like.

The host work is :class:`~cc_runtime.bench.hostwork.HostWork`: real Python bookkeeping that holds the
GIL (``--host-us`` + ``--host-us-per-req`` x batch), so the worker thread's contention for the
interpreter is part of what is measured. CPU time per step is read per thread (the kernel's
per-thread CPU clocks): ``host_cpu_us_per_step_added`` is the scheduler thread's CPU per step with
cc_runtime minus with CC off; ``worker_cpu_us_per_step`` the readback worker thread's, all of it
(the emulator's CC charges on that thread are waits of the emulator, not AES-GCM work, so nothing is
subtracted). ``worker_floor_cpu_us_per_step`` is measured in the same repetitions by the
``worker_floor`` arm: the worker thread with nothing to copy, so per step it only waits for the step's
readiness event and hands the step back, which is what any thread that reads back for the scheduler
pays before doing any work (on a 2-vCPU VM whose idle vCPUs halt, ~25-30 us).
``worker_cpu_over_floor_us_per_step`` is the difference within each repetition. Every thread that
waits for the device waits on a blocking primitive (no spinning).

Crossings are counted by the device's own copy counters (the simulated device's ``stats``, the GPU
emulator's ``stats``), never by the code under test; the summary entry names the counter. Arms run in
an order rotated per repetition (:mod:`.interleave`); summaries are median [min-max] over repetitions.
On CPU everything runs on the emulator's simulated device ("simulated"); on a GPU the device step is
real matmuls and CC comes from ``cc_runtime.emulator.cuda.emulate`` ("emulated"). Every read-back token
id is checked against the step that wrote it (``readback_errors`` must be 0). Long mode adds a
100k-step soak of ``cc_runtime``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from .common import BenchContext, BenchResult, modelled, progress, ratio_spread, spread, thread_cpu_clock
from .hostwork import HostWork
from .interleave import per_rep, schedule
from .partial import measured
from .readback_arms import ARMS as ARM_SPECS
from .readback_arms import CC_INLINE, CC_OFF, CC_OFF_RUNTIME, CC_RUNTIME, DEFAULT, FLOOR_ARM, load_peers
from .readback_env import TOPK, Env, arm_env, real_cc
from .readback_peer import PeerArms, env_for

DESCRIPTION = "decode-loop steps/s under CC: inline readback (upstream) vs cc_runtime's worker + coalescing"

ARMS = (CC_OFF, CC_OFF_RUNTIME, CC_INLINE, CC_RUNTIME)  # the plotted arms; every run also has the floor
RING = 4  # output buffer sets reused round-robin (deeper than the 2-step overlap pipeline)
COLUMNS = ["batch", "cc_off_steps_s", "cc_off_runtime_steps_s", "cc_inline_steps_s", "cc_runtime_steps_s",
           "uncorrected_ratio", "ratio", "ratio_same_path", "speedup_vs_inline", "host_cpu_added_us",
           "worker_cpu_us", "worker_floor_cpu_us", "worker_over_floor_us", "inline_transfers", "runtime_transfers"]
#: Why ratio_vs_cc_off can stay above 1.0 in every repetition (a baseline with more work, not noise).
ABOVE_ONE_UPSTREAM = ("the CC-off baseline is upstream's readback, which launches four copies and records "
                      "an event on the scheduler thread each step, where cc_runtime's arm hands one step to "
                      "its worker; compare ratio_vs_cc_off_same_path for CC's own overhead")
#: Bytes one step reads back per request: token id int64, logprob float32, top-5 float32 + int64.
BYTES_PER_REQUEST = 8 + 4 + TOPK * 4 + TOPK * 8


def add_arguments(parser: Any) -> None:
    parser.add_argument("--step-ms", type=float, default=None, help="device time per decode step (batch 1)")
    parser.add_argument("--step-us-per-req", type=float, default=None,
                        help="extra device time per request in the batch (KV reads grow with batch)")
    parser.add_argument("--host-us", type=float, default=None,
                        help="scheduler bookkeeping per step, GIL-holding Python (default 500)")
    parser.add_argument("--host-us-per-req", type=float, default=None,
                        help="extra scheduler bookkeeping per request (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per run")
    parser.add_argument("--reps", type=int, default=None, help="repetitions of every (batch, arm)")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated, e.g. 1,8,64,256")
    parser.add_argument("--soak-steps", type=int, default=None, help="long mode soak length (default 100000)")


@dataclass
class Config:
    step_s: float
    step_per_req_s: float
    host_us: float
    host_us_per_req: float
    steps: int
    warmup: int
    reps: int
    batch_sizes: list[int]
    soak_steps: int = 0
    #: GPU: matmuls per device step, by step length; calibrated once (first arm: CC off) and shared,
    #: so every arm runs the same device work (one matmul more or less is ~8% of a 4 ms step).
    mm_reps: dict[float, int] = field(default_factory=dict)

    def step_time_s(self, bs: int) -> float:
        return self.step_s + bs * self.step_per_req_s


def _config(ctx: BenchContext) -> Config:
    x = ctx.extra
    cuda = ctx.device == "cuda"
    if x.get("batch_sizes"):
        sizes = [int(s) for s in str(x["batch_sizes"]).split(",") if s.strip()]
    elif ctx.quick:
        sizes = [1, 16, 64, 256]
    else:
        sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256]

    def opt(key: str, default: float) -> float:
        return float(x[key]) if x.get(key) is not None else default

    # A GPU run is part of the GPU check's few minutes: fewer, longer steps there.
    steps = int(x.get("steps") or (100 if ctx.quick else 200 if cuda else 400))
    reps = int(x.get("reps") or (3 if ctx.quick or cuda else 5))
    return Config(step_s=opt("step_ms", 4.0 if cuda else 3.0) / 1e3, step_per_req_s=opt("step_us_per_req", 5.0) / 1e6,
                  host_us=opt("host_us", 500.0), host_us_per_req=opt("host_us_per_req", 2.0), steps=steps,
                  warmup=10, reps=max(1, reps), batch_sizes=sizes,
                  soak_steps=int(x.get("soak_steps") or (100_000 if ctx.long else 0)))


# -- the loop --------------------------------------------------------------------------------------
@dataclass
class ArmRun:
    steps_s: float
    transfers_per_step: float | None  # by the device's own copy counter; None where none counts
    errors: int
    sched_cpu_us: float  # scheduler thread CPU per measured step
    worker_cpu_us: float | None  # readback worker thread CPU per measured step (arms with a worker)


def consume_results(handle: tuple[int, Any]) -> int:
    """Process one step's results after its copy_done; returns how many values were wrong."""
    step, rb = handle
    if isinstance(rb, tuple):
        hosts, done = rb
        done.synchronize()
    else:
        hosts = rb.result  # CopyDone: synchronize() + the host views
        if hosts is None:
            return 0  # the floor arm: nothing was read back
    ids = hosts[0].tolist()
    top_ids = hosts[3].tolist()
    _ = hosts[1].tolist(), hosts[2].tolist()  # what the output processor turns into responses
    bad = sum(1 for v in ids if v != step)
    if hosts[3].numel() and top_ids and isinstance(top_ids[0], list) and len(top_ids[0]) != TOPK:
        bad += 1
    return bad


def run_loop(env: Env, arm: str, bs: int, cfg: Config, steps: int) -> ArmRun:
    """``steps`` measured steps (after ``cfg.warmup``) of one arm: throughput, crossings and CPU per thread."""
    submit = ARM_SPECS[arm].submit
    ring = [env.outputs(bs) for _ in range(RING)]
    host = HostWork(cfg.host_us, cfg.host_us_per_req)
    worker_clock = thread_cpu_clock(env.worker._thread) if env.worker is not None else None
    prev: tuple[int, Any] | None = None
    errors = 0
    t0 = time.perf_counter()
    cpu0 = time.thread_time()
    wcpu0 = worker_clock() if worker_clock else 0.0
    # Crossings are counted over every step, warm-up included: a worker may still be copying a
    # warm-up step when the measured window opens, so a windowed count would be off by one.
    transfers0 = env.transfers()
    total = cfg.warmup + steps
    for step in range(total):
        if step == cfg.warmup:
            t0, cpu0 = time.perf_counter(), time.thread_time()
            wcpu0 = worker_clock() if worker_clock else 0.0
        host.run(bs, token=step)  # scheduling: bookkeeping per request, build the next batch
        outs = ring[step % RING]
        with env.forward_stream():
            env.forward(outs, step)
            rb = submit(env, outs)
        if prev is not None:
            errors += consume_results(prev)
        prev = (step, rb)
    if prev is not None:
        errors += consume_results(prev)
    elapsed = time.perf_counter() - t0
    sched_cpu = time.thread_time() - cpu0
    worker_cpu = (worker_clock() - wcpu0) if worker_clock else None  # read before shutdown ends the thread
    transfers1 = env.transfers()
    transfers = None if transfers0 is None or transfers1 is None else (transfers1 - transfers0) / total
    return ArmRun(steps / elapsed, transfers, errors, sched_cpu / steps * 1e6,
                  None if worker_cpu is None else worker_cpu / steps * 1e6)


def arms_for(ctx: BenchContext) -> tuple[list[str], list[str]]:
    """The arms this run measures, and the notes on any left out (with why)."""
    real = real_cc(ctx)
    arms: list[str] = []
    notes = load_peers()
    for name in DEFAULT:
        spec = ARM_SPECS[name]
        why = "the GPU is in real CC mode: no CC-off arm" if real and not spec.cc else (
            spec.skip(ctx) if spec.skip is not None else None)
        if why:
            notes.append(f"arm {name} not run: {why}")
        else:
            arms.append(name)
    return arms, notes


def _measure(ctx: BenchContext, cfg: Config, arms: list[str]) -> tuple[dict[tuple[int, str], list[ArmRun]], str]:
    """Every (batch, arm) ``cfg.reps`` times, in :func:`~.interleave.schedule` order; and the crossing counter."""
    runs: dict[tuple[int, str], list[ArmRun]] = {}
    counter = ""
    work = schedule(cfg.reps, cfg.batch_sizes, arms)
    for _rep, bs, arm in progress(work, desc="readback", total=len(work)):
        with env_for(ctx, arm, cfg.step_time_s(bs), cfg.mm_reps) as env:  # peer arms: readback_peer
            runs.setdefault((bs, arm), []).append(run_loop(env, arm, bs, cfg, cfg.steps))
            counter = counter or env.counter
        measured({"rep": _rep, "batch": bs, "arm": arm, **vars(runs[(bs, arm)][-1])})
    return runs, counter


def _worst(per_batch: dict[int, dict[str, Any]], highest: bool) -> dict[str, Any] | None:
    """The batch size whose median is worst (lowest ratio, or highest cost), with its batch size."""
    if not per_batch:
        return None
    pick = max if highest else min
    bs = pick(per_batch, key=lambda b: per_batch[b]["median"])
    return {**per_batch[bs], "batch": bs}


def _ratio(runs: dict[tuple[int, str], list[ArmRun]], bs: int, arm: str, base: str,
           above_one: str | None = None) -> dict[str, Any] | None:
    if (bs, arm) not in runs or (bs, base) not in runs:
        return None
    return ratio_spread(per_rep(runs[(bs, arm)], runs[(bs, base)], lambda a, b: a.steps_s / b.steps_s), above_one)


def _transfers(runs: list[ArmRun], counter: str) -> dict[str, Any] | None:
    vals = [r.transfers_per_step for r in runs if r.transfers_per_step is not None]
    return {**spread(vals), "counter": counter} if vals else None


def run(ctx: BenchContext) -> BenchResult:
    cfg = _config(ctx)
    real = real_cc(ctx)
    label = "real CC" if real else "emulated" if ctx.device == "cuda" else "simulated"
    arms, skipped = arms_for(ctx)
    peer = PeerArms(ctx)  # SGLang's own worker beside ours, when SGLang 0.5.23+ is importable
    runs, counter = _measure(ctx, cfg, [*arms, *peer.arms])

    rows: list[dict[str, Any]] = []
    keys = ("ratio", "ratio_same_path", "uncorrected", "speedup", "host_added", "worker_cpu", "worker_floor",
            "over_floor")
    per: dict[str, dict[int, dict[str, Any]]] = {k: {} for k in keys}
    for bs in cfg.batch_sizes:
        fixed = runs[(bs, CC_RUNTIME)]
        cells = {
            "ratio": _ratio(runs, bs, CC_RUNTIME, CC_OFF, ABOVE_ONE_UPSTREAM),
            "ratio_same_path": _ratio(runs, bs, CC_RUNTIME, CC_OFF_RUNTIME),
            "uncorrected": _ratio(runs, bs, CC_INLINE, CC_OFF),
            "speedup": spread(per_rep(fixed, runs[(bs, CC_INLINE)], lambda f, i: f.steps_s / i.steps_s)),
            "host_added": spread(per_rep(fixed, runs[(bs, CC_OFF)], lambda f, o: f.sched_cpu_us - o.sched_cpu_us))
            if (bs, CC_OFF) in runs else None,
        }
        floor = runs.get((bs, FLOOR_ARM), [])
        if all(r.worker_cpu_us is not None for r in fixed + floor):
            cells["worker_cpu"] = spread(r.worker_cpu_us for r in fixed)  # type: ignore[misc]
            if floor:
                cells["worker_floor"] = spread(r.worker_cpu_us for r in floor)  # type: ignore[misc]
                cells["over_floor"] = spread(per_rep(fixed, floor, lambda f, o: f.worker_cpu_us - o.worker_cpu_us))
        for k, v in cells.items():
            if v is not None:
                per[k][bs] = v

        def med(arm: str, attr: str = "steps_s", bs: int = bs) -> float | None:
            vals = [getattr(r, attr) for r in runs.get((bs, arm), []) if getattr(r, attr) is not None]
            return statistics.median(vals) if vals else None

        rows.append({
            "batch": bs, **{f"{arm}_steps_s": med(arm) for arm in (*ARMS, *[a for a in arms if a not in ARMS])},
            "uncorrected_ratio": cells["uncorrected"], "ratio": cells["ratio"],
            "ratio_same_path": cells["ratio_same_path"], "speedup_vs_inline": cells["speedup"],
            "host_cpu_added_us": cells["host_added"], "worker_cpu_us": cells.get("worker_cpu"),
            "worker_floor_cpu_us": cells.get("worker_floor"), "worker_over_floor_us": cells.get("over_floor"),
            "sched_cpu_us_cc_off": med(CC_OFF, "sched_cpu_us"), "sched_cpu_us_cc_runtime": med(CC_RUNTIME, "sched_cpu_us"),
            "inline_transfers": med(CC_INLINE, "transfers_per_step"),
            "runtime_transfers": med(CC_RUNTIME, "transfers_per_step"),
        })
    all_runs = [r for (_bs, arm), rs in runs.items() if arm != FLOOR_ARM for r in rs]
    summary: dict[str, Any] = {
        "ratio_vs_cc_off": _worst(per["ratio"], highest=False),
        "ratio_vs_cc_off_same_path": _worst(per["ratio_same_path"], highest=False),
        "uncorrected_ratio_vs_cc_off": _worst(per["uncorrected"], highest=False),
        "speedup_vs_inline": _worst(per["speedup"], highest=False),
        "host_cpu_us_per_step_added": _worst(per["host_added"], highest=True),
        "worker_cpu_us_per_step": _worst(per["worker_cpu"], highest=True),
        "worker_floor_cpu_us_per_step": _worst(per["worker_floor"], highest=True),
        "worker_cpu_over_floor_us_per_step": _worst(per["over_floor"], highest=True),
        "transfers_per_step": _transfers([r for bs in cfg.batch_sizes for r in runs[(bs, CC_RUNTIME)]], counter),
        "inline_transfers_per_step": _transfers([r for bs in cfg.batch_sizes for r in runs[(bs, CC_INLINE)]],
                                                counter),
        "readback_errors": sum(r.errors for r in all_runs),
    }
    notes = [
        f"{label}: CC arms use {'the real CC GPU' if real else 'profile ' + ctx.emulate}; device step "
        f"{cfg.step_s * 1e3:g} ms + {cfg.step_per_req_s * 1e6:g} us/request; host work {cfg.host_us:g} us + "
        f"{cfg.host_us_per_req:g} us/request of GIL-holding Python bookkeeping; {cfg.reps} repetitions of "
        f"{cfg.steps} steps per (batch, arm), arms interleaved in an order rotated per repetition; "
        "summary = median [min-max] over repetitions",
        "ratios are CC arm / CC-off arm within one repetition: above 1.0 is never a gain. ratio_vs_cc_off "
        f"compares with upstream's CC-off readback; above 1.0 in every repetition: {ABOVE_ONE_UPSTREAM}. "
        "ratio_vs_cc_off_same_path compares with cc_runtime's own path with CC off",
        "worker_cpu_us_per_step is the worker thread's whole CPU, nothing subtracted (the emulator's CC "
        "charges on that thread are its own waits, not AES-GCM work); "
        f"worker_floor_cpu_us_per_step: the same worker thread with nothing to copy ({FLOOR_ARM} arm, same "
        "repetitions): one wait for the step's readiness event and one hand-off to the scheduler per step; "
        "worker_cpu_over_floor_us_per_step: the difference within each repetition",
        f"crossings counted by {counter or 'nothing independent of the code under test (none reported)'}",
        *skipped,
    ]
    peer.report(runs, cfg.batch_sizes, rows, summary, notes)
    if cfg.soak_steps:
        summary.update(_soak(ctx, cfg))
        notes.append(f"soak: {cfg.soak_steps} steps of the cc_runtime arm, every token id checked")
    if ctx.plot_path and not _plot(ctx.plot_path, rows, label):
        notes.append("plot skipped: matplotlib is not installed (pip install 'cc-runtime[bench]')")
    return BenchResult(
        benchmark="readback", summary=summary, rows=rows, columns=COLUMNS, notes=notes, model=_model(ctx, cfg),
        title=("readback: decode steps/s on a real CC GPU, inline vs cc_runtime" if real else
               f"readback: decode steps/s, CC off vs {label} CC ({ctx.emulate}) inline vs cc_runtime"),
        environment={"label": label, "transfer_counter": counter},
    )


def _model(ctx: BenchContext, cfg: Config) -> dict[str, Any]:
    """What was configured or follows from the profile, not measured."""
    from ..emulator.profiles import load_profile

    profile = load_profile(ctx.emulate)
    model: dict[str, Any] = {
        "step_ms": modelled(cfg.step_s * 1e3, "configured device time per step (--step-ms)"),
        "step_us_per_req": modelled(cfg.step_per_req_s * 1e6, "configured (--step-us-per-req)"),
        "host_us": modelled(cfg.host_us, "configured host bookkeeping per step (--host-us)"),
        "host_us_per_req": modelled(cfg.host_us_per_req, "configured (--host-us-per-req)"),
    }
    for bs in sorted({cfg.batch_sizes[0], cfg.batch_sizes[-1]}):
        nbytes = BYTES_PER_REQUEST * bs
        charged = (profile.copy_cost_s(nbytes, "d2h") + profile.launch_extra_s) * 1e6
        model[f"worker_cc_charged_us_per_step_batch_{bs}"] = modelled(
            charged, f"profile {profile.name}: one coalesced D2H copy of {nbytes} B + one pack-kernel launch "
                     "(wall time the emulator makes the worker wait; not subtracted from any measured CPU)")
    return model


def _plot(path: str, rows: list[dict[str, Any]], label: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    batches = [r["batch"] for r in rows]
    for arm in ARMS:
        if rows[0].get(f"{arm}_steps_s") is not None:
            ax.plot(batches, [r[f"{arm}_steps_s"] for r in rows], marker="o", label=arm)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("decode steps/s (median)")
    ax.set_title(f"readback under CC ({label})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _soak(ctx: BenchContext, cfg: Config) -> dict[str, Any]:
    """100k steps through the worker with short steps: nothing lost, reordered or hung."""
    soak_cfg = Config(step_s=min(cfg.step_s, 2e-4), step_per_req_s=0.0, host_us=50.0, host_us_per_req=0.0,
                      steps=cfg.soak_steps, warmup=0, reps=1, batch_sizes=[64])
    with arm_env(ctx, "cc_runtime", soak_cfg.step_s, soak_cfg.mm_reps) as env:
        t0 = time.perf_counter()
        result = run_loop(env, "cc_runtime", 64, soak_cfg, soak_cfg.steps)
        failed = env.worker.failed
        completed = env.worker.completed
    return {"soak_steps": soak_cfg.steps, "soak_errors": result.errors + failed, "soak_completed": completed,
            "soak_seconds": time.perf_counter() - t0, "soak_steps_s": result.steps_s}
