"""``cc-runtime bench readback``: a decode loop's throughput under CC, with and without cc_runtime's readback.

The loop has the shape of SGLang's overlap scheduler (``event_loop_overlap``): each step does the
scheduler's host work, launches the device step, starts the readback of that step's outputs (token
ids int64, logprobs float32, top-5 logprob values float32 and ids int64), then processes the previous
step's results after ``copy_done.synchronize()``. Three arms per batch size:

* ``cc_off``: no CC; upstream's per-tensor ``non_blocking`` copies + an event (overlap intact).
* ``cc_inline``: CC (emulated / simulated) with upstream's readback: each copy is host-synchronous, so
  the scheduler waits for the step it just launched (the behaviour SGLang PR 15188 measured).
* ``cc_runtime``: CC with :class:`~cc_runtime.readback.ReadbackWorker` + coalescing (one crossing).

The host work is :class:`~cc_runtime.bench.hostwork.HostWork`: real Python bookkeeping that holds the
GIL (``--host-us`` + ``--host-us-per-req`` x batch), so the worker thread's contention for the
interpreter is part of what is measured. CPU time per step is read per thread (the kernel's
per-thread CPU clocks): ``host_cpu_us_per_step_added`` is the scheduler thread's CPU per step with
cc_runtime minus with CC off; ``worker_cpu_us_per_step`` the readback worker thread's, all of it.
Every thread that waits for the device waits on a blocking primitive (no spinning).

The worker's CPU holds the CC charge: under real CC the thread that copies does the AES-GCM of the
bounce buffer (and encrypts each launch), so any implementation that reads back pays it on some
thread; the emulator stands it in with a calibrated wait on that thread. On the simulated device the
worker's CPU inside those waits is measured too, on the same thread over the same window
(``cc_runtime.emulator.clock.charged_cpu_s``): ``worker_cc_charge_cpu_us_per_step``; and
``worker_own_cpu_us_per_step`` = measured total minus measured charge, per run: what cc_runtime's
own code (queueing, waiting, packing, unpacking, hand-offs) costs the worker. The worker goal applies
to the own part, because the charge is set by the profile (~25-31 us per step for h100 at batch
1-256, under ``model``), not by cc_runtime; the total and the charge stay in the summary beside it.
Both halves run on the simulated device's Python and threads, so they are *simulated* figures: a
CPU that sleeps between 3 ms steps runs the worker's torch calls with cold caches (a
``read_coalesced`` that costs ~50 us back to back costs ~3-4x that after a 3 ms sleep on a loaded
2-core VM). On a GPU the emulator charges through the same clock, so the keys are measured alike.

``worker_floor_cpu_us_per_step`` puts a floor beside them, measured in the same repetitions: a fourth
arm (``worker_floor``) runs the same worker thread with nothing to copy, so per step it only waits for
the step's readiness event and hands the step back to the scheduler. That is what any thread that
reads back for the scheduler pays before doing any work: one wake-up after a multi-ms device wait and
one wake-up of the scheduler. On a 2-vCPU VM whose idle vCPUs halt (haltpoll) it is ~25-30 us, so a
worker goal near 30 us is a goal on this machine's wake-ups more than on cc_runtime's code.

Each (batch, arm) runs ``reps`` times, the arms interleaved within a repetition; ratios are taken
within a repetition and reported as median [min-max] over repetitions. A ratio above 1.0 is noise,
never a gain (the summary entry says so). On CPU everything runs on the emulator's simulated device
("simulated"); on a GPU the device step is real matmuls and CC comes from
``cc_runtime.emulator.cuda.emulate`` ("emulated"). Every read-back token id is checked against the
step that wrote it (``readback_errors`` must be 0). Long mode adds a 100k-step soak of ``cc_runtime``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .common import BenchContext, BenchResult, modelled, progress, ratio_spread, spread, thread_cpu_clock
from .hostwork import HostWork
from .partial import measured
from .readback_env import FLOOR_ARM, TOPK, Env, arm_env, real_cc
from .readback_peer import PeerArms, env_for

DESCRIPTION = "decode-loop steps/s under CC: inline readback (upstream) vs cc_runtime's worker + coalescing"

ARMS = ("cc_off", "cc_inline", "cc_runtime")
RING = 4  # output buffer sets reused round-robin (deeper than the 2-step overlap pipeline)
COLUMNS = ["batch", "cc_off_steps_s", "cc_inline_steps_s", "cc_runtime_steps_s", "uncorrected_ratio",
           "ratio", "speedup_vs_inline", "host_cpu_added_us", "worker_cpu_us", "worker_charge_cpu_us",
           "worker_own_cpu_us", "worker_floor_cpu_us", "inline_transfers", "runtime_transfers"]
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
    transfers_per_step: float
    errors: int
    sched_cpu_us: float  # scheduler thread CPU per measured step
    worker_cpu_us: float | None  # readback worker thread CPU per measured step (cc_runtime arm only)
    #: of which spent in the emulator's CC charges, measured on the worker thread (simulated device)
    worker_charge_cpu_us: float | None = None

    @property
    def worker_own_cpu_us(self) -> float | None:
        if self.worker_cpu_us is None or self.worker_charge_cpu_us is None:
            return None
        return self.worker_cpu_us - self.worker_charge_cpu_us


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


def _nothing() -> None:
    """The floor arm's readback: the worker waits for the step, runs this, and signals."""


def run_loop(env: Env, arm: str, bs: int, cfg: Config, steps: int) -> ArmRun:
    """``steps`` measured steps (after ``cfg.warmup``) of one arm: throughput, crossings and CPU per thread."""
    ring = [env.outputs(bs) for _ in range(RING)]
    host = HostWork(cfg.host_us, cfg.host_us_per_req)
    worker_clock = thread_cpu_clock(env.worker._thread) if env.worker is not None else None
    charge_clock = env.charge_clock()
    prev: tuple[int, Any] | None = None
    errors = 0
    t0 = time.perf_counter()
    cpu0 = time.thread_time()
    wcpu0 = worker_clock() if worker_clock else 0.0
    charge0 = charge_clock() if charge_clock else 0.0
    # Crossings are counted over every step, warm-up included: a worker may still be copying a
    # warm-up step when the measured window opens, so a windowed count would be off by one.
    transfers0 = env.transfers()
    total = cfg.warmup + steps
    for step in range(total):
        if step == cfg.warmup:
            t0, cpu0 = time.perf_counter(), time.thread_time()
            wcpu0 = worker_clock() if worker_clock else 0.0
            charge0 = charge_clock() if charge_clock else 0.0
        host.run(bs, token=step)  # scheduling: bookkeeping per request, build the next batch
        outs = ring[step % RING]
        with env.forward_stream():
            env.forward(outs, step)
            if arm == "cc_runtime":
                rb: Any = env.worker.submit_coalesced(outs)
            elif arm == FLOOR_ARM:
                rb = env.worker.submit(_nothing)
            else:
                rb = env.inline_readback(outs)
        if prev is not None:
            errors += consume_results(prev)
        prev = (step, rb)
    if prev is not None:
        errors += consume_results(prev)
    elapsed = time.perf_counter() - t0
    sched_cpu = time.thread_time() - cpu0
    # Both read before shutdown ends the thread; the charge last, so it never exceeds the total.
    worker_cpu = (worker_clock() - wcpu0) if worker_clock else None
    charge = (charge_clock() - charge0) if charge_clock and worker_cpu is not None else None
    return ArmRun(steps / elapsed, (env.transfers() - transfers0) / total, errors, sched_cpu / steps * 1e6,
                  None if worker_cpu is None else worker_cpu / steps * 1e6,
                  None if charge is None else charge / steps * 1e6)


def _measure(ctx: BenchContext, cfg: Config, arms: tuple[str, ...]) -> dict[tuple[int, str], list[ArmRun]]:
    runs: dict[tuple[int, str], list[ArmRun]] = {}
    # Repetition outermost: a burst of background load then hits every arm of a rep alike.
    work = [(rep, bs, arm) for rep in range(cfg.reps) for bs in cfg.batch_sizes for arm in arms]
    for _rep, bs, arm in progress(work, desc="readback", total=len(work)):
        with env_for(ctx, arm, cfg.step_time_s(bs), cfg.mm_reps) as env:  # peer arms: readback_peer
            runs.setdefault((bs, arm), []).append(run_loop(env, arm, bs, cfg, cfg.steps))
        measured({"rep": _rep, "batch": bs, "arm": arm, **vars(runs[(bs, arm)][-1])})
    return runs


def _pairwise(a: list[ArmRun], b: list[ArmRun], fn: Callable[[ArmRun, ArmRun], float]) -> list[float]:
    return [fn(x, y) for x, y in zip(a, b, strict=True)]


def _worst(per_batch: dict[int, dict[str, Any]], highest: bool) -> dict[str, Any] | None:
    """The batch size whose median is worst (lowest ratio, or highest cost), with its batch size."""
    if not per_batch:
        return None
    pick = max if highest else min
    bs = pick(per_batch, key=lambda b: per_batch[b]["median"])
    return {**per_batch[bs], "batch": bs}


def run(ctx: BenchContext) -> BenchResult:
    cfg = _config(ctx)
    real = real_cc(ctx)
    label = "real CC" if real else "emulated" if ctx.device == "cuda" else "simulated"
    arms = ARMS[1:] if real else ARMS  # no CC-off arm on a machine whose GPU is in CC mode
    peer = PeerArms(ctx)  # SGLang's own worker beside ours, when SGLang 0.5.23+ is importable
    runs = _measure(ctx, cfg, (*arms, FLOOR_ARM, *peer.arms))

    rows: list[dict[str, Any]] = []
    ratio: dict[int, dict[str, Any]] = {}
    uncorrected: dict[int, dict[str, Any]] = {}
    speedup: dict[int, dict[str, Any]] = {}
    host_added: dict[int, dict[str, Any]] = {}
    worker_cpu: dict[int, dict[str, Any]] = {}
    worker_charge: dict[int, dict[str, Any]] = {}
    worker_own: dict[int, dict[str, Any]] = {}
    worker_floor: dict[int, dict[str, Any]] = {}
    for bs in cfg.batch_sizes:
        inline, fixed = runs[(bs, "cc_inline")], runs[(bs, "cc_runtime")]
        off = runs.get((bs, "cc_off"))
        speedup[bs] = spread(_pairwise(fixed, inline, lambda f, i: f.steps_s / i.steps_s))
        if off:
            ratio[bs] = ratio_spread(_pairwise(fixed, off, lambda f, o: f.steps_s / o.steps_s))
            uncorrected[bs] = ratio_spread(_pairwise(inline, off, lambda i, o: i.steps_s / o.steps_s))
            host_added[bs] = spread(_pairwise(fixed, off, lambda f, o: f.sched_cpu_us - o.sched_cpu_us))
        wcpu = [r.worker_cpu_us for r in fixed if r.worker_cpu_us is not None]
        if wcpu:
            worker_cpu[bs] = spread(wcpu)
        charge = [r.worker_charge_cpu_us for r in fixed if r.worker_charge_cpu_us is not None]
        own = [r.worker_own_cpu_us for r in fixed if r.worker_own_cpu_us is not None]
        if charge and own:
            worker_charge[bs] = spread(charge)
            worker_own[bs] = spread(own)
        floor = [r.worker_cpu_us for r in runs[(bs, FLOOR_ARM)] if r.worker_cpu_us is not None]
        if floor:
            worker_floor[bs] = spread(floor)

        def med(rs: list[ArmRun] | None) -> float | None:
            return statistics.median(r.steps_s for r in rs) if rs else None

        rows.append({
            "batch": bs,
            "cc_off_steps_s": med(off), "cc_inline_steps_s": med(inline), "cc_runtime_steps_s": med(fixed),
            "uncorrected_ratio": uncorrected.get(bs), "ratio": ratio.get(bs), "speedup_vs_inline": speedup[bs],
            "host_cpu_added_us": host_added.get(bs), "worker_cpu_us": worker_cpu.get(bs),
            "worker_charge_cpu_us": worker_charge.get(bs), "worker_own_cpu_us": worker_own.get(bs),
            "worker_floor_cpu_us": worker_floor.get(bs),
            "sched_cpu_us_cc_off": statistics.median(r.sched_cpu_us for r in off) if off else None,
            "sched_cpu_us_cc_runtime": statistics.median(r.sched_cpu_us for r in fixed),
            "inline_transfers": statistics.median(r.transfers_per_step for r in inline),
            "runtime_transfers": statistics.median(r.transfers_per_step for r in fixed),
        })
    all_runs = [r for (_bs, arm), rs in runs.items() if arm != FLOOR_ARM for r in rs]
    summary: dict[str, Any] = {
        "ratio_vs_cc_off": _worst(ratio, highest=False),
        "uncorrected_ratio_vs_cc_off": _worst(uncorrected, highest=False),
        "speedup_vs_inline": _worst(speedup, highest=False),
        "host_cpu_us_per_step_added": _worst(host_added, highest=True),
        "worker_cpu_us_per_step": _worst(worker_cpu, highest=True),
    }
    if worker_own:  # measured on this path only (the simulated device's charges): absent, not guessed
        summary["worker_own_cpu_us_per_step"] = _worst(worker_own, highest=True)
        summary["worker_cc_charge_cpu_us_per_step"] = _worst(worker_charge, highest=True)
    if worker_floor:
        summary["worker_floor_cpu_us_per_step"] = _worst(worker_floor, highest=True)
    summary |= {
        "transfers_per_step": spread(r.transfers_per_step for bs in cfg.batch_sizes for r in runs[(bs, "cc_runtime")]),
        "inline_transfers_per_step": spread(r.transfers_per_step for bs in cfg.batch_sizes
                                            for r in runs[(bs, "cc_inline")]),
        "readback_errors": sum(r.errors for r in all_runs),
    }
    model = _model(ctx, cfg)
    notes = [
        f"{label}: CC arms use {'the real CC GPU' if real else 'profile ' + ctx.emulate}; device step "
        f"{cfg.step_s * 1e3:g} ms + {cfg.step_per_req_s * 1e6:g} us/request; host work {cfg.host_us:g} us + "
        f"{cfg.host_us_per_req:g} us/request of GIL-holding Python bookkeeping; {cfg.reps} repetitions of "
        f"{cfg.steps} steps per (batch, arm), arms interleaved; summary = median [min-max] over repetitions",
        "ratios are CC arm / CC off within one repetition: above 1.0 is noise, never a gain",
        "worker_cpu_us_per_step is the worker thread's whole CPU; it includes the CC charge the profile "
        "puts on the thread that copies, as real CC's encryption would (measured on the worker: "
        "worker_cc_charge_cpu_us_per_step; modelled: model.worker_cc_charged_us_per_step_batch_N); "
        "worker_own_cpu_us_per_step = total - charge, per run, is cc_runtime's own part, and the goal's key",
        f"worker_floor_cpu_us_per_step: the same worker thread with nothing to copy ({FLOOR_ARM} arm, same "
        "repetitions): one wait for the step's readiness event and one hand-off to the scheduler per step, "
        "the CPU any readback thread pays on this machine before it does any work",
    ]
    peer.report(runs, cfg.batch_sizes, rows, summary, notes)
    if cfg.soak_steps:
        summary.update(_soak(ctx, cfg))
        notes.append(f"soak: {cfg.soak_steps} steps of the cc_runtime arm, every token id checked")
    if ctx.plot_path and not _plot(ctx.plot_path, rows, label):
        notes.append("plot skipped: matplotlib is not installed (pip install 'cc-runtime[bench]')")
    return BenchResult(
        benchmark="readback", summary=summary, rows=rows, columns=COLUMNS, notes=notes, model=model,
        title=("readback: decode steps/s on a real CC GPU, inline vs cc_runtime" if real else
               f"readback: decode steps/s, CC off vs {label} CC ({ctx.emulate}) inline vs cc_runtime"),
        environment={"label": label},
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
                     "(wall time; the worker's own work inside the copy's window counts toward it)")
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
        if rows[0][f"{arm}_steps_s"] is not None:
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
