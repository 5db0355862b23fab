"""``cc-runtime bench readback``: a decode loop's throughput under CC, with and without cc_runtime's readback.

The loop has the shape of SGLang's overlap scheduler (``event_loop_overlap``): each step does host
scheduling work, launches the device step, starts the readback of that step's outputs (token ids
int64, logprobs float32, top-5 logprob values float32 and ids int64), then processes the previous
step's results after ``copy_done.synchronize()``. Three arms per batch size:

* ``cc_off``: no CC; upstream's per-tensor ``non_blocking`` copies + an event (overlap intact).
* ``cc_inline``: CC (emulated / simulated) with upstream's readback: each copy is host-synchronous, so
  the scheduler waits for the step it just launched (the behaviour SGLang PR 15188 measured).
* ``cc_runtime``: CC with :class:`~cc_runtime.readback.ReadbackWorker` + coalescing (one crossing).

``ratio_vs_cc_off`` is the worst (over batch sizes) steps/s of ``cc_runtime`` over ``cc_off``;
``uncorrected_ratio_vs_cc_off`` the same for ``cc_inline``. Host work is modelled as a timed wait that
releases the GIL (as a C extension or the tokenizer would), so the result measures the scheduling
structure rather than GIL contention on a small CI box. Each (batch, arm) is measured ``reps`` times,
interleaved, and the best run is kept (standard for throughput under background noise).

On CPU everything runs on the emulator's simulated device (results labelled "simulated"); on a GPU
the device step is real matmuls and CC comes from ``cc_runtime.emulator.cuda.emulate`` ("emulated").
Every read-back token id is checked against the step that wrote it (``readback_errors`` must be 0).
Long mode adds a 100k-step soak of the ``cc_runtime`` arm.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .common import BenchContext, BenchResult, progress

DESCRIPTION = "decode-loop steps/s under CC: inline readback (upstream) vs cc_runtime's worker + coalescing"

ARMS = ("cc_off", "cc_inline", "cc_runtime")
TOPK = 5
RING = 4  # output buffer sets reused round-robin (deeper than the 2-step overlap pipeline)
COLUMNS = ["batch", "cc_off_steps_s", "cc_inline_steps_s", "cc_runtime_steps_s", "uncorrected_ratio",
           "ratio", "speedup_vs_inline", "inline_transfers", "runtime_transfers"]


def add_arguments(parser: Any) -> None:
    parser.add_argument("--step-ms", type=float, default=None, help="device time per decode step (batch 1)")
    parser.add_argument("--step-us-per-req", type=float, default=None,
                        help="extra device time per request in the batch (KV reads grow with batch)")
    parser.add_argument("--host-ms", type=float, default=None, help="host scheduling work per step (batch 1)")
    parser.add_argument("--host-us-per-req", type=float, default=None, help="extra host work per request")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per run")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated, e.g. 1,8,64,256")
    parser.add_argument("--soak-steps", type=int, default=None, help="long mode soak length (default 100000)")


@dataclass
class Config:
    step_s: float
    step_per_req_s: float
    host_s: float
    host_per_req_s: float
    steps: int
    warmup: int
    reps: int
    batch_sizes: list[int]
    soak_steps: int = 0
    #: GPU: matmuls per device step, by step length; calibrated once (first arm: CC off) and shared,
    #: so every arm runs the same device work (one matmul more or less is ~8% of a 4 ms step).
    mm_reps: dict[float, int] = field(default_factory=dict)

    def host_work_s(self, bs: int) -> float:
        return self.host_s + bs * self.host_per_req_s

    def step_time_s(self, bs: int) -> float:
        return self.step_s + bs * self.step_per_req_s


def _config(ctx: BenchContext) -> Config:
    x = ctx.extra
    cuda = ctx.device == "cuda"
    quick = ctx.quick
    if x.get("batch_sizes"):
        sizes = [int(s) for s in str(x["batch_sizes"]).split(",") if s.strip()]
    elif quick:
        sizes = [1, 16, 64, 256]
    else:
        sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    step_ms = x.get("step_ms") or (4.0 if cuda else 3.0)
    host_ms = x.get("host_ms") or step_ms * 0.2
    per_req_us = x.get("host_us_per_req")
    if per_req_us is None:
        per_req_us = 2.0
    # A GPU run is part of the ~6 min GPU check: fewer, longer steps there.
    step_per_req_us = x.get("step_us_per_req")
    if step_per_req_us is None:
        step_per_req_us = 5.0
    steps = x.get("steps") or (120 if quick else 200 if cuda else 400)
    soak = x.get("soak_steps") or (100_000 if ctx.long else 0)
    return Config(step_s=step_ms / 1e3, step_per_req_s=step_per_req_us / 1e6, host_s=host_ms / 1e3, host_per_req_s=per_req_us / 1e6, steps=steps,
                  warmup=10, reps=2 if quick or cuda else 3, batch_sizes=sizes, soak_steps=soak)


# -- the device side, per platform -------------------------------------------------------------
class _Env:
    """One arm on one device: allocate outputs, run a step, start a readback, count crossings."""

    worker: Any = None

    def outputs(self, bs: int) -> list[Any]:
        raise NotImplementedError

    def forward(self, outs: list[Any], step: int) -> None:
        raise NotImplementedError

    def forward_stream(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def inline_readback(self, outs: list[Any]) -> tuple[list[Any], Any]:
        raise NotImplementedError

    def transfers(self) -> int:
        raise NotImplementedError


class _SimEnv(_Env):
    def __init__(self, sim: Any, step_s: float) -> None:
        self.sim = sim
        self.step_s = step_s
        self.fwd = sim.Stream(name="forward")

    def outputs(self, bs: int) -> list[Any]:
        import torch

        return [self.sim.zeros((bs,), dtype=torch.int64), self.sim.zeros((bs,), dtype=torch.float32),
                self.sim.zeros((bs, TOPK), dtype=torch.float32), self.sim.zeros((bs, TOPK), dtype=torch.int64)]

    def forward(self, outs: list[Any], step: int) -> None:
        def kernel() -> None:
            outs[0].fill_(step)
            outs[1].fill_(-0.25)
            outs[2].fill_(-1.5)
            outs[3].fill_(step)

        self.sim.launch(kernel, self.step_s, label="decode step")

    def forward_stream(self) -> contextlib.AbstractContextManager[Any]:
        return self.sim.stream(self.fwd)  # type: ignore[no-any-return]

    def inline_readback(self, outs: list[Any]) -> tuple[list[Any], Any]:
        import torch

        hosts = [torch.empty_like(t) for t in outs]
        for h, t in zip(hosts, outs, strict=True):
            self.sim.copy_(h, t, non_blocking=True)  # upstream: .to("cpu", non_blocking=True)
        done = self.sim.Event()
        done.record()
        return hosts, done

    def transfers(self) -> int:
        return int(self.sim.stats["copies_d2h"])


class _CudaEnv(_Env):
    def __init__(self, step_s: float, mm_reps: dict[float, int]) -> None:
        import torch

        self.torch = torch
        self.fwd = torch.cuda.Stream()
        n = 2048
        self.a = torch.randn(n, n, device="cuda")
        self.b = torch.randn(n, n, device="cuda") / n
        self.c = torch.empty(n, n, device="cuda")
        if step_s not in mm_reps:
            mm_reps[step_s] = self._calibrate(step_s)
        self.reps = mm_reps[step_s]
        self._inline = 0

    def _calibrate(self, step_s: float) -> int:
        torch = self.torch
        torch.mm(self.a, self.b, out=self.c)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            torch.mm(self.a, self.b, out=self.c)
        torch.cuda.synchronize()
        per = (time.perf_counter() - t0) / 20
        return max(1, round(step_s / per))

    def outputs(self, bs: int) -> list[Any]:
        torch = self.torch
        outs = [torch.zeros(bs, dtype=torch.int64, device="cuda"), torch.zeros(bs, device="cuda"),
                torch.zeros(bs, TOPK, device="cuda"), torch.zeros(bs, TOPK, dtype=torch.int64, device="cuda")]
        torch.cuda.synchronize()  # zeroed on the default stream; the forward stream writes them next
        return outs

    def forward(self, outs: list[Any], step: int) -> None:
        torch = self.torch
        for _ in range(self.reps):
            torch.mm(self.a, self.b, out=self.c)
        bs = outs[0].shape[0]
        vals, idx = torch.topk(self.c[:bs, :64], TOPK, dim=-1)
        outs[2].copy_(vals)
        outs[3].copy_(idx)
        outs[1].copy_(vals[:, 0])
        outs[0].fill_(step)  # the value the host checks: written last, on the forward stream

    def forward_stream(self) -> contextlib.AbstractContextManager[Any]:
        return self.torch.cuda.stream(self.fwd)  # type: ignore[no-any-return]

    def inline_readback(self, outs: list[Any]) -> tuple[list[Any], Any]:
        hosts = [t.to("cpu", non_blocking=True) for t in outs]
        self._inline += len(outs)
        done = self.torch.cuda.Event()
        done.record()
        return hosts, done

    def transfers(self) -> int:
        return self._inline + (self.worker.backend.transfers if self.worker is not None else 0)


@contextlib.contextmanager
def _arm_env(ctx: BenchContext, arm: str, cfg: Config, bs: int) -> Iterator[_Env]:
    from ..readback import ReadbackWorker

    if ctx.device == "cuda":
        from ..emulator import cuda as emu

        # Under real CC there is nothing to emulate (and no CC-off arm): the GPU is measured as it is.
        cm: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if arm == "cc_off" or _real_cc(ctx)
            else emu.emulate(ctx.emulate, seed=ctx.seed))
        with cm:
            env: _Env = _CudaEnv(cfg.step_time_s(bs), cfg.mm_reps)
            if arm == "cc_runtime":  # started inside emulation so its thread pays CC launch costs too
                env.worker = ReadbackWorker("cuda")
            try:
                yield env
            finally:
                if env.worker is not None:
                    env.worker.shutdown()
                import torch

                torch.cuda.synchronize()
        return
    from ..emulator import SimDevice

    with SimDevice(None if arm == "cc_off" else ctx.emulate, name=f"sim-{arm}", seed=ctx.seed) as sim:
        env = _SimEnv(sim, cfg.step_time_s(bs))
        if arm == "cc_runtime":
            env.worker = ReadbackWorker(sim)
        try:
            yield env
        finally:
            if env.worker is not None:
                env.worker.shutdown()


def _real_cc(ctx: BenchContext) -> bool:
    from ..detect import cc_state

    return ctx.device == "cuda" and cc_state().real


# -- the loop --------------------------------------------------------------------------------------
def _consume(handle: tuple[int, Any]) -> int:
    """Process one step's results after its copy_done; returns how many values were wrong."""
    step, rb = handle
    if isinstance(rb, tuple):
        hosts, done = rb
        done.synchronize()
    else:
        hosts = rb.result  # CopyDone: synchronize() + the host views
    ids = hosts[0].tolist()
    top_ids = hosts[3].tolist()
    _ = hosts[1].tolist(), hosts[2].tolist()  # what the output processor turns into responses
    bad = sum(1 for v in ids if v != step)
    if hosts[3].numel() and top_ids and isinstance(top_ids[0], list) and len(top_ids[0]) != TOPK:
        bad += 1
    return bad


def _run_loop(env: _Env, arm: str, bs: int, cfg: Config, steps: int,
              wait: Callable[[float], None]) -> tuple[float, float, int]:
    """(steps per second, crossings per step, wrong values) for ``steps`` measured steps."""
    ring = [env.outputs(bs) for _ in range(RING)]
    prev: tuple[int, Any] | None = None
    errors = 0
    t0 = time.perf_counter()
    transfers0 = env.transfers()
    host_s = cfg.host_work_s(bs)
    total = cfg.warmup + steps
    for step in range(total):
        if step == cfg.warmup:
            t0 = time.perf_counter()
        wait(host_s)  # scheduling: receive requests, build the batch
        outs = ring[step % RING]
        with env.forward_stream():
            env.forward(outs, step)
            if arm == "cc_runtime":
                rb: Any = env.worker.submit_coalesced(outs)
            else:
                rb = env.inline_readback(outs)
        if prev is not None:
            errors += _consume(prev)
        prev = (step, rb)
    if prev is not None:
        errors += _consume(prev)
    elapsed = time.perf_counter() - t0
    return steps / elapsed, (env.transfers() - transfers0) / total, errors


def run(ctx: BenchContext) -> BenchResult:
    from ..emulator.clock import wait_s

    cfg = _config(ctx)
    real = _real_cc(ctx)
    label = "real CC" if real else "emulated" if ctx.device == "cuda" else "simulated"
    arms = ARMS[1:] if real else ARMS  # no CC-off arm on a machine whose GPU is in CC mode
    best: dict[tuple[int, str], float] = {}
    transfers: dict[tuple[int, str], float] = {}
    errors = 0
    work = [(bs, rep, arm) for bs in cfg.batch_sizes for rep in range(cfg.reps) for arm in arms]
    for bs, _rep, arm in progress(work, desc="readback", total=len(work)):
        with _arm_env(ctx, arm, cfg, bs) as env:
            sps, tps, bad = _run_loop(env, arm, bs, cfg, cfg.steps, wait_s)
        errors += bad
        best[(bs, arm)] = max(best.get((bs, arm), 0.0), sps)
        transfers[(bs, arm)] = tps

    rows: list[dict[str, Any]] = []
    for bs in cfg.batch_sizes:
        off = best.get((bs, "cc_off"))
        inline, fixed = best[(bs, "cc_inline")], best[(bs, "cc_runtime")]
        rows.append({
            "batch": bs,
            "cc_off_steps_s": off,
            "cc_inline_steps_s": inline,
            "cc_runtime_steps_s": fixed,
            "uncorrected_ratio": inline / off if off else None,
            "ratio": fixed / off if off else None,
            "speedup_vs_inline": fixed / inline,
            "inline_transfers": transfers[(bs, "cc_inline")],
            "runtime_transfers": transfers[(bs, "cc_runtime")],
        })
    summary: dict[str, float | int | None] = {
        "ratio_vs_cc_off": None if real else min(r["ratio"] for r in rows),
        "uncorrected_ratio_vs_cc_off": None if real else min(r["uncorrected_ratio"] for r in rows),
        "speedup_vs_inline": min(r["speedup_vs_inline"] for r in rows),
        "transfers_per_step": max(r["runtime_transfers"] for r in rows),
        "inline_transfers_per_step": max(r["inline_transfers"] for r in rows),
        "readback_errors": errors,
        "step_ms": cfg.step_s * 1e3,
        "step_us_per_req": cfg.step_per_req_s * 1e6,
        "host_ms": cfg.host_s * 1e3,
    }
    notes = [
        f"{label}: CC arms use {'the real CC GPU' if real else 'profile ' + ctx.emulate}; device step "
        f"{cfg.step_s * 1e3:g} ms + {cfg.step_per_req_s * 1e6:g} us/request, host work "
        f"{cfg.host_s * 1e3:g} ms + {cfg.host_per_req_s * 1e6:g} us/request; best of {cfg.reps} runs of "
        f"{cfg.steps} steps",
        "goal: ratio_vs_cc_off >= 0.98 on a GPU, >= 0.95 on the CPU simulation",
    ]
    if cfg.soak_steps:
        summary.update(_soak(ctx, cfg, wait_s))
        notes.append(f"soak: {cfg.soak_steps} steps of the cc_runtime arm, every token id checked")
    if ctx.plot_path and not _plot(ctx.plot_path, rows, label):
        notes.append("plot skipped: matplotlib is not installed (pip install 'cc-runtime[bench]')")
    return BenchResult(
        benchmark="readback",
        summary=summary,
        rows=rows,
        columns=COLUMNS,
        notes=notes,
        title=("readback: decode steps/s on a real CC GPU, inline vs cc_runtime" if real else
               f"readback: decode steps/s, CC off vs {label} CC ({ctx.emulate}) inline vs cc_runtime"),
        environment={"label": label},
    )


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
    ax.set_ylabel("decode steps/s")
    ax.set_title(f"readback under CC ({label})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _soak(ctx: BenchContext, cfg: Config, wait: Callable[[float], None]) -> dict[str, float | int | None]:
    """100k steps through the worker with short steps: nothing lost, reordered or hung."""
    soak_cfg = Config(step_s=min(cfg.step_s, 2e-4), step_per_req_s=0.0, host_s=5e-5, host_per_req_s=0.0, steps=cfg.soak_steps,
                      warmup=0, reps=1, batch_sizes=[64])
    with _arm_env(ctx, "cc_runtime", soak_cfg, 64) as env:
        t0 = time.perf_counter()
        sps, tps, bad = _run_loop(env, "cc_runtime", 64, soak_cfg, soak_cfg.steps, wait)
        failed = env.worker.failed
        completed = env.worker.completed
    return {"soak_steps": soak_cfg.steps, "soak_errors": bad + failed, "soak_completed": completed,
            "soak_seconds": time.perf_counter() - t0, "soak_steps_s": sps}
