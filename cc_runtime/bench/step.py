"""``cc-runtime bench step``: a whole scheduler step under CC: inputs in, forward, readback out.

The loop has the shape of SGLang's overlap scheduler: host work for step N (real GIL-holding Python,
:class:`~cc_runtime.bench.hostwork.HostWork`), its host->device inputs, its forward (queued on the
forward stream while step N-1 may still run), its readback, then the results of step N-1. A decode loop
(batch 1-256; inputs: request-pool indices, sequence lengths, sampling temperatures) and a prefill loop
(128-8192 tokens; inputs: token ids, positions, KV slots per token, and per-request sequence / prefix /
extend lengths and pool indices). Arms, all in one run:

* ``cc_off``: no CC; inputs as pinned non_blocking copies on the forward stream, inline readback.
* ``cc_upstream``: CC as SGLang 0.5.23 leaves it: each input a pageable copy on the forward stream (so
  it waits for the forward queued before it), inline readback (waits for the step just queued).
* ``cc_readback``: CC with cc_runtime's readback worker only (inputs still inline).
* ``cc_runtime``: CC with the readback worker and :class:`~cc_runtime.staging.H2DStager` (one packed
  crossing on an idle side stream; the forward stream waits on its event and reads the staging slot in
  place, released after the forward that reads it; SGLang's builders use the D2D form instead).

Every forward checks on the device that each input holds the value written for its step, and every
read-back token id is checked (``input_errors`` / ``readback_errors`` must be 0). On CPU everything runs
on the emulator's SimDevice ("simulated"); on a GPU the forward is real matmuls and CC comes from
``cc_runtime.emulator.cuda.emulate`` ("emulated").
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .common import BenchContext, BenchResult, modelled, one_intra_op_thread, progress, ratio_spread, spread
from .device_step import CudaForward, sim_outputs
from .partial import measured
from .readback import consume_results

DESCRIPTION = "scheduler step under CC: inline inputs + readback (upstream) vs readback worker vs + H2D staging"

ARMS = ("cc_off", "cc_upstream", "cc_readback", "cc_runtime")
COLUMNS = ["loop", "size", "cc_off_steps_s", "cc_upstream_steps_s", "cc_readback_steps_s", "cc_runtime_steps_s",
           "uncorrected_ratio", "readback_only_ratio", "ratio", "h2d_upstream", "h2d_runtime", "d2h_runtime",
           "cpu_us_upstream", "cpu_us_runtime"]


def add_arguments(parser: Any) -> None:
    parser.add_argument("--steps", type=int, default=None, help="measured steps per run")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per (size, arm)")
    parser.add_argument("--batch-sizes", default=None, help="decode batch sizes, e.g. 1,16,64,256")
    parser.add_argument("--prefill-tokens", default=None, help="prefill token counts, e.g. 128,1024,8192")


@dataclass
class Config:
    decode_sizes: list[int]
    prefill_sizes: list[int]
    steps: int
    warmup: int
    reps: int
    decode_step_s: float = 3e-3
    decode_per_req_s: float = 5e-6
    prefill_step_s: float = 2e-3
    prefill_per_token_s: float = 0.5e-6
    host_base_us: float = 500.0
    host_us_per_req: float = 2.0

    def device_s(self, loop: str, size: int) -> float:
        if loop == "decode":
            return self.decode_step_s + size * self.decode_per_req_s
        return self.prefill_step_s + size * self.prefill_per_token_s


def _sizes(raw: Any, default: list[int]) -> list[int]:
    return [int(s) for s in str(raw).split(",") if s.strip()] if raw else default


def _config(ctx: BenchContext) -> Config:
    x = ctx.extra
    quick = ctx.quick
    return Config(
        decode_sizes=_sizes(x.get("batch_sizes"), [1, 16, 64, 256] if quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]),
        prefill_sizes=_sizes(x.get("prefill_tokens"), [128, 1024, 8192] if quick else [128, 512, 1024, 2048, 4096, 8192]),
        steps=x.get("steps") or (120 if quick else 300),
        warmup=8,
        reps=x.get("reps") or (2 if quick else 3),
    )


def step_inputs(loop: str, size: int, step: int) -> tuple[list[Any], int]:
    """One step's host inputs (every element = ``step`` so the forward can check it) and the batch size."""
    import torch

    if loop == "decode":
        bs = size
        return [torch.full((bs,), step, dtype=torch.int64), torch.full((bs,), step, dtype=torch.int64),
                torch.full((bs,), float(step), dtype=torch.float32)], bs
    bs = max(1, size // 512)
    per_tok = [torch.full((size,), step, dtype=torch.int64) for _ in range(3)]  # ids, positions, KV slots
    per_req = [torch.full((bs,), step, dtype=torch.int64) for _ in range(4)]  # seq/prefix/extend lens, pool idx
    return per_tok + per_req, bs


# -- devices -----------------------------------------------------------------------------------
class _Sim:
    kind = "simulated"

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.fwd = sim.Stream(name="forward")

    def stream(self) -> contextlib.AbstractContextManager[Any]:
        return self.sim.stream(self.fwd)  # type: ignore[no-any-return]

    def outputs(self, bs: int) -> list[Any]:
        return sim_outputs(self.sim, bs)

    def inline_inputs(self, hosts: list[Any], pinned: bool) -> list[Any]:
        if not pinned:  # SGLang 0.5.23 turns pinning off under CC
            for h in hosts:
                self.sim.mark_pageable(h)
        return [self.sim.to_device(h, non_blocking=True) for h in hosts]  # upstream: .to(dev, non_blocking)

    def forward(self, inputs: list[Any], outs: list[Any], step: int, device_s: float, errors: list[int]) -> None:
        def kernel() -> None:
            if any(int(t.min()) != step or int(t.max()) != step for t in inputs if t.numel()):
                errors[0] += 1
            outs[0].fill_(step)
            outs[1].fill_(-0.25)
            outs[2].fill_(-1.5)
            outs[3].fill_(step)

        self.sim.launch(kernel, device_s, label="step")

    def inline_readback(self, outs: list[Any]) -> tuple[list[Any], Any]:
        import torch

        hosts = [torch.empty_like(t) for t in outs]
        for h, t in zip(hosts, outs, strict=True):
            self.sim.copy_(h, t, non_blocking=True)
        done = self.sim.Event()
        done.record()
        return hosts, done

    def counts(self, stager: Any, worker: Any) -> tuple[int, int]:
        return int(self.sim.stats["copies_h2d"]), int(self.sim.stats["copies_d2h"])


class _Cuda:
    kind = "cuda"

    def __init__(self, mm_reps: dict[float, int]) -> None:
        self.dev = CudaForward(mm_reps)
        self.torch = torch = self.dev.torch
        self.h2d = self.d2h = 0
        self.flag = torch.zeros(1, dtype=torch.int64, device="cuda")

    def stream(self) -> contextlib.AbstractContextManager[Any]:
        return self.dev.stream()

    def outputs(self, bs: int) -> list[Any]:
        return self.dev.outputs(bs)

    def inline_inputs(self, hosts: list[Any], pinned: bool) -> list[Any]:
        self.h2d += len(hosts)
        if pinned:  # CC off, SGLang stages inputs in pinned memory
            hosts = [h.pin_memory() for h in hosts]
        return [h.to("cuda", non_blocking=True) for h in hosts]

    def forward(self, inputs: list[Any], outs: list[Any], step: int, device_s: float, errors: list[int]) -> None:
        torch = self.torch
        self.dev.run(device_s)
        for t in inputs:  # a device-side check, read back with the outputs
            if t.numel():
                self.flag += ((t.min() != step) | (t.max() != step)).to(torch.int64)
        outs[1].fill_(-0.25)
        outs[2].fill_(-1.5)
        outs[3].fill_(step)
        outs[0].fill_(step)

    def inline_readback(self, outs: list[Any]) -> tuple[list[Any], Any]:
        hosts = [t.to("cpu", non_blocking=True) for t in outs]
        self.d2h += len(outs)
        done = self.torch.cuda.Event(blocking=True)  # the scheduler sleeps on it: its CPU time is measured
        done.record()
        return hosts, done

    def counts(self, stager: Any, worker: Any) -> tuple[int, int]:
        h2d = self.h2d + (stager.backend.h2d_transfers if stager is not None else 0)
        d2h = self.d2h + (worker.backend.transfers if worker is not None else 0)
        return h2d, d2h


@contextlib.contextmanager
def _arm(ctx: BenchContext, arm: str, mm_reps: dict[float, int]) -> Iterator[tuple[Any, Any, Any]]:
    from ..readback import ReadbackWorker
    from ..staging import H2DStager

    worker = stager = None
    if ctx.device == "cuda":
        import torch

        from ..emulator import cuda as emu

        cm: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if arm == "cc_off" else emu.emulate(ctx.emulate, seed=ctx.seed))
        with cm:
            dev: Any = _Cuda(mm_reps)
            if arm in ("cc_readback", "cc_runtime"):
                worker = ReadbackWorker("cuda")
            if arm == "cc_runtime":
                stager = H2DStager("cuda", cc=True)
            try:
                yield dev, worker, stager
            finally:
                if worker is not None:
                    worker.shutdown()
                torch.cuda.synchronize()
        return
    from ..emulator import SimDevice

    with SimDevice(None if arm == "cc_off" else ctx.emulate, name=f"sim-{arm}", seed=ctx.seed) as sim:
        dev = _Sim(sim)
        if arm in ("cc_readback", "cc_runtime"):
            worker = ReadbackWorker(sim)
        if arm == "cc_runtime":
            stager = H2DStager(sim, cc=True)
        try:
            yield dev, worker, stager
        finally:
            if worker is not None:
                worker.shutdown()


def _run_loop(dev: Any, worker: Any, stager: Any, loop: str, size: int, cfg: Config,
              hostwork: Any, pinned_inputs: bool = False) -> dict[str, float]:
    """One measured run: steps/s, crossings per step, scheduler-thread CPU per step, errors."""
    _, bs = step_inputs(loop, size, 0)
    ring = [dev.outputs(bs) for _ in range(4)]
    device_s = cfg.device_s(loop, size)
    prev: tuple[int, Any] | None = None
    bad_inputs = [0]
    readback_errors = 0
    total = cfg.warmup + cfg.steps
    t0 = c0 = 0.0
    h0 = d0 = 0
    for step in range(total):
        if step == cfg.warmup:
            if prev is not None:  # let the worker finish the warm-up copy so it is not counted here
                rb0 = prev[1]
                (rb0[1] if isinstance(rb0, tuple) else rb0).synchronize()
            t0, c0 = time.perf_counter(), time.thread_time()
            h0, d0 = dev.counts(stager, worker)
        hostwork.run(bs, step)  # scheduling: requests in, batch built (GIL-holding Python)
        hosts, _ = step_inputs(loop, size, step)
        outs = ring[step % len(ring)]
        with dev.stream():
            staged = None
            if stager is not None:
                # The forward stream waits for the one crossing and reads the slot in place; the slot
                # is released once the forward that reads it is queued (inputs used by this step only).
                staged = stager.stage(hosts)
                inputs = staged.views()
            else:
                inputs = dev.inline_inputs(hosts, pinned=pinned_inputs)
            dev.forward(inputs, outs, step, device_s, bad_inputs)
            if staged is not None:
                staged.release()
            rb: Any = worker.submit_coalesced(outs) if worker is not None else dev.inline_readback(outs)
        if prev is not None:
            readback_errors += consume_results(prev)
        prev = (step, rb)
    if prev is not None:
        readback_errors += consume_results(prev)
    elapsed, cpu = time.perf_counter() - t0, time.thread_time() - c0
    h1, d1 = dev.counts(stager, worker)
    if dev.kind == "cuda":
        dev.torch.cuda.synchronize()  # the last forward's input check runs on the forward stream
        bad_inputs[0] += int(dev.flag.item())
    return {"steps_s": cfg.steps / elapsed, "h2d": (h1 - h0) / cfg.steps, "d2h": (d1 - d0) / cfg.steps,
            "cpu_us": cpu / cfg.steps * 1e6, "input_errors": bad_inputs[0], "readback_errors": readback_errors}


def run(ctx: BenchContext) -> BenchResult:
    with one_intra_op_thread(ctx.device):
        return _run(ctx)


def _run(ctx: BenchContext) -> BenchResult:
    from .hostwork import HostWork

    cfg = _config(ctx)
    label = "emulated" if ctx.device == "cuda" else "simulated"
    hostwork = HostWork(cfg.host_base_us, cfg.host_us_per_req)
    mm_reps: dict[float, int] = {}
    cells = [(loop, size) for loop, sizes in (("decode", cfg.decode_sizes), ("prefill", cfg.prefill_sizes))
             for size in sizes]
    runs: dict[tuple[str, int, str], list[dict[str, float]]] = {}
    work = [(loop, size, rep, arm) for loop, size in cells for rep in range(cfg.reps) for arm in ARMS]
    for loop, size, _rep, arm in progress(work, desc="step", total=len(work)):
        with _arm(ctx, arm, mm_reps) as (dev, worker, stager):
            runs.setdefault((loop, size, arm), []).append(
                _run_loop(dev, worker, stager, loop, size, cfg, hostwork, pinned_inputs=arm == "cc_off"))
        measured({"loop": loop, "size": size, "rep": _rep, "arm": arm, **runs[(loop, size, arm)][-1]})

    def med(loop: str, size: int, arm: str, key: str) -> float:
        return float(spread(r[key] for r in runs[(loop, size, arm)])["median"])

    def ratios(arm: str) -> list[float]:
        # Per repetition: the worst cell's ratio (arms of one repetition ran back to back).
        return [min(runs[(lp, sz, arm)][i]["steps_s"] / runs[(lp, sz, "cc_off")][i]["steps_s"] for lp, sz in cells)
                for i in range(cfg.reps)]

    rows: list[dict[str, Any]] = []
    for loop, size in cells:
        off = med(loop, size, "cc_off", "steps_s")
        row: dict[str, Any] = {"loop": loop, "size": size}
        for arm in ARMS:
            row[f"{arm}_steps_s"] = med(loop, size, arm, "steps_s")
        row.update(uncorrected_ratio=row["cc_upstream_steps_s"] / off, readback_only_ratio=row["cc_readback_steps_s"] / off,
                   ratio=row["cc_runtime_steps_s"] / off, h2d_upstream=med(loop, size, "cc_upstream", "h2d"),
                   h2d_runtime=med(loop, size, "cc_runtime", "h2d"), d2h_runtime=med(loop, size, "cc_runtime", "d2h"),
                   cpu_us_upstream=med(loop, size, "cc_upstream", "cpu_us"),
                   cpu_us_runtime=med(loop, size, "cc_runtime", "cpu_us"))
        rows.append(row)

    def per_step(key: str, arm: str, loop: str | None = None) -> dict[str, float]:
        return spread(max(r[key] for r in runs[(lp, sz, arm)]) for lp, sz in cells if loop in (None, lp))

    errors = sum(r["input_errors"] + r["readback_errors"] for rs in runs.values() for r in rs)
    summary: dict[str, Any] = {
        "ratio_vs_cc_off": ratio_spread(ratios("cc_runtime")),
        "ratio_vs_cc_off_readback_only": ratio_spread(ratios("cc_readback")),
        "uncorrected_ratio_vs_cc_off": ratio_spread(ratios("cc_upstream")),
        "h2d_transfers_per_step": per_step("h2d", "cc_runtime", "decode"),
        "h2d_transfers_per_step_prefill": per_step("h2d", "cc_runtime", "prefill"),
        "d2h_transfers_per_step": per_step("d2h", "cc_runtime"),
        "h2d_transfers_per_step_upstream": per_step("h2d", "cc_upstream"),
        "scheduler_cpu_us_per_step": spread(r["cpu_us"] for (_l, _s, a), rs in runs.items() if a == "cc_runtime"
                                            for r in rs),
        "scheduler_cpu_us_per_step_upstream": spread(r["cpu_us"] for (_l, _s, a), rs in runs.items()
                                                     if a == "cc_upstream" for r in rs),
        "errors": errors,
    }
    from ..emulator.profiles import OFF, load_profile

    prof = load_profile(ctx.emulate)
    model = {
        "h2d_crossing_s_small": modelled(OFF.copy_cost_s(64, "h2d") + prof.copy_cost_s(64, "h2d"),
                                         f"emulator profile {prof.name}: CC-off fit + CC extra, 64 B host->device"),
        "decode_step_device_s": modelled([cfg.device_s("decode", s) for s in cfg.decode_sizes],
                                         "benchmark constant: device time per decode step by batch"),
        "prefill_step_device_s": modelled([cfg.device_s("prefill", s) for s in cfg.prefill_sizes],
                                          "benchmark constant: device time per prefill step by tokens"),
        "host_work_us": modelled({"base": cfg.host_base_us, "per_request": cfg.host_us_per_req},
                                 "benchmark constant: HostWork sizing (GIL-holding Python)"),
    }
    notes = [
        f"{label}: CC arms use profile {ctx.emulate}; {cfg.reps} repetitions of {cfg.steps} steps per cell; "
        "ratios are per repetition the worst cell's steps/s over cc_off (spread over repetitions)",
        "goal: ratio_vs_cc_off >= 0.95 simulated, >= 0.98 on a GPU; h2d_transfers_per_step 1 for decode; "
        "a ratio above 1.0 is noise, not a gain",
    ]
    if label == "simulated":
        notes.append("simulated: torch runs one intra-op thread here (the simulated device's threads stand in "
                     "for the GPU; a parallel pack competing with them costs ms, an artefact no GPU host has)")
    if errors:
        notes.append(f"ERROR: {errors} wrong inputs or read-back values")
    return BenchResult(benchmark="step", summary=summary, rows=rows, columns=COLUMNS, notes=notes, model=model,
                       title=f"step: scheduler steps/s, CC off vs {label} CC ({ctx.emulate}): upstream, readback "
                             "worker, readback + H2D staging",
                       environment={"label": label})
