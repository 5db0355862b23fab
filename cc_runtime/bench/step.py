"""``cc-runtime bench step``: a whole scheduler step under CC: inputs in, forward, readback out.

The loop has the shape of SGLang's overlap scheduler: host work for step N (real GIL-holding Python,
:class:`~cc_runtime.bench.hostwork.HostWork`), its host->device inputs, its forward (queued on the
forward stream while step N-1 may still run), its readback, then the results of step N-1. A decode loop
(batch 1-256; inputs: request-pool indices, sequence lengths, sampling temperatures) and a prefill loop
(128-8192 tokens; inputs: token ids, positions, KV slots per token, and per-request sequence / prefix /
extend lengths and pool indices). Arms, all in one run, interleaved in an order rotated per repetition
(:mod:`.step_env` says how each arm's inputs reach the device):

* ``cc_off``: no CC, upstream: inputs as pinned non_blocking copies on the forward stream, inline readback.
* ``cc_off_runtime``: no CC, cc_runtime's path (as ``cc_runtime`` below, with the device not in CC).
* ``cc_upstream``: CC as SGLang 0.5.23 leaves it: each input a pageable copy on the forward stream (so
  it waits for the forward queued before it), inline readback (waits for the step just queued).
* ``cc_readback``: CC with cc_runtime's readback worker only (inputs still inline).
* ``cc_runtime``: what ships: the readback worker, and the inputs made the way SGLang's patched builders
  make them, ``host.to(device)`` inside :func:`~cc_runtime.staging.deferred.deferred_h2d` (interception,
  one packed crossing on the stager's side stream, a device-to-device copy into the placeholders).

Ratios, per repetition, the worst cell's: ``ratio_vs_cc_off`` (cc_runtime under CC over upstream with
CC off, what users compare) and ``ratio_vs_cc_off_same_path`` (over cc_runtime's own path with CC off:
the CC overhead left). ``staging_cpu_us_per_step``: the scheduler thread's CPU in the input section
(from the first ``.to()`` to inputs ready on the device) of ``cc_runtime`` minus that of
``cc_readback`` (the same arm with upstream's inline inputs), per repetition: what interception and
packing add (decode, worst batch; ``_prefill``: the largest prefill). Crossings per step are counted by
the device's own copy counters, named in each entry's ``counter``. Every forward checks on the device
that each input holds the value written for its step, and every read-back token id is checked
(``errors`` must be 0). On CPU everything runs on the emulator's SimDevice ("simulated"); on a GPU the
forward is real matmuls and CC comes from ``cc_runtime.emulator.cuda.emulate`` ("emulated").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .common import BenchContext, BenchResult, modelled, one_intra_op_thread, progress, ratio_spread, spread
from .interleave import per_rep, schedule
from .partial import measured
from .readback import consume_results
from .step_env import ARM_SPECS, ARMS, arm_device, deferred_inputs

DESCRIPTION = ("scheduler step under CC: upstream inline inputs + readback vs readback worker vs what ships "
               "(deferred H2D scope + stager + worker)")

COLUMNS = ["loop", "size", "cc_off_steps_s", "cc_off_runtime_steps_s", "cc_upstream_steps_s", "cc_readback_steps_s",
           "cc_runtime_steps_s", "uncorrected_ratio", "ratio", "ratio_same_path", "h2d_upstream", "h2d_runtime",
           "d2h_runtime", "input_cpu_us_readback", "input_cpu_us_runtime", "staging_cpu_us"]


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


def _run_loop(dev: Any, worker: Any, stager: Any, loop: str, size: int, cfg: Config,
              hostwork: Any, pinned_inputs: bool = False) -> dict[str, Any]:
    """One measured run: steps/s, crossings per step (the device's counters), scheduler-thread CPU per
    step in all and in the input section, errors."""
    _, bs = step_inputs(loop, size, 0)
    ring = [dev.outputs(bs) for _ in range(4)]
    device_s = cfg.device_s(loop, size)
    prev: tuple[int, Any] | None = None
    bad_inputs = [0]
    readback_errors = 0
    total = cfg.warmup + cfg.steps
    t0 = c0 = input_cpu = 0.0
    h0 = d0 = None
    for step in range(total):
        if step == cfg.warmup:
            if prev is not None:  # let the worker finish the warm-up copy so it is not counted here
                rb0 = prev[1]
                (rb0[1] if isinstance(rb0, tuple) else rb0).synchronize()
            t0, c0, input_cpu = time.perf_counter(), time.thread_time(), 0.0
            h0, d0 = dev.counts()
        hostwork.run(bs, step)  # scheduling: requests in, batch built (GIL-holding Python)
        hosts, _ = step_inputs(loop, size, step)
        outs = ring[step % len(ring)]
        with dev.stream():
            i0 = time.thread_time()
            if stager is not None:
                inputs = deferred_inputs(dev, stager, hosts)
            else:
                inputs = dev.inline_inputs(hosts, pinned=pinned_inputs)
            input_cpu += time.thread_time() - i0
            dev.forward(inputs, outs, step, device_s, bad_inputs)
            rb: Any = worker.submit_coalesced(outs) if worker is not None else dev.inline_readback(outs)
        if prev is not None:
            readback_errors += consume_results(prev)
        prev = (step, rb)
    if prev is not None:
        readback_errors += consume_results(prev)
    elapsed, cpu = time.perf_counter() - t0, time.thread_time() - c0
    h1, d1 = dev.counts()
    if dev.kind == "cuda":
        dev.torch.cuda.synchronize()  # the last forward's input check runs on the forward stream
        bad_inputs[0] += int(dev.flag.item())

    def per_step(a: int | None, b: int | None) -> float | None:
        return None if a is None or b is None else (b - a) / cfg.steps

    return {"steps_s": cfg.steps / elapsed, "h2d": per_step(h0, h1), "d2h": per_step(d0, d1),
            "cpu_us": cpu / cfg.steps * 1e6, "input_cpu_us": input_cpu / cfg.steps * 1e6,
            "input_errors": bad_inputs[0], "readback_errors": readback_errors}


def run(ctx: BenchContext) -> BenchResult:
    with one_intra_op_thread(ctx.device):
        return _run(ctx)


Runs = dict[tuple[str, int, str], list[dict[str, Any]]]


def _measure(ctx: BenchContext, cfg: Config, cells: list[tuple[str, int]]) -> tuple[Runs, str]:
    from .hostwork import HostWork

    hostwork = HostWork(cfg.host_base_us, cfg.host_us_per_req)
    mm_reps: dict[float, int] = {}
    runs: Runs = {}
    counter = ""
    work = schedule(cfg.reps, cells, ARMS)
    for _rep, (loop, size), arm in progress(work, desc="step", total=len(work)):
        with arm_device(ctx, arm, mm_reps) as (dev, worker, stager):
            runs.setdefault((loop, size, arm), []).append(
                _run_loop(dev, worker, stager, loop, size, cfg, hostwork, pinned_inputs=not ARM_SPECS[arm].cc))
            counter = counter or dev.counter
        measured({"loop": loop, "size": size, "rep": _rep, "arm": arm, **runs[(loop, size, arm)][-1]})
    return runs, counter


def _counted(values: list[float | None], counter: str) -> dict[str, Any] | None:
    vals = [v for v in values if v is not None]
    return {**spread(vals), "counter": counter} if vals else None


def _run(ctx: BenchContext) -> BenchResult:
    cfg = _config(ctx)
    label = "emulated" if ctx.device == "cuda" else "simulated"
    cells = [(loop, size) for loop, sizes in (("decode", cfg.decode_sizes), ("prefill", cfg.prefill_sizes))
             for size in sizes]
    runs, counter = _measure(ctx, cfg, cells)

    def med(loop: str, size: int, arm: str, key: str) -> float | None:
        vals = [r[key] for r in runs[(loop, size, arm)] if r[key] is not None]
        return float(spread(vals)["median"]) if vals else None

    def rep_ratios(lp: str, sz: int, arm: str, base: str) -> list[float]:
        return per_rep(runs[(lp, sz, arm)], runs[(lp, sz, base)], lambda a, b: a["steps_s"] / b["steps_s"])

    def ratios(arm: str, base: str = "cc_off") -> list[float]:
        # Per repetition: the worst cell's ratio (arms of one repetition ran back to back).
        per_cell = [rep_ratios(lp, sz, arm, base) for lp, sz in cells]
        return [min(c[i] for c in per_cell) for i in range(cfg.reps)]

    def staging(lp: str, sz: int) -> list[float]:
        return per_rep(runs[(lp, sz, "cc_runtime")], runs[(lp, sz, "cc_readback")],
                       lambda a, b: a["input_cpu_us"] - b["input_cpu_us"])

    rows: list[dict[str, Any]] = []
    for loop, size in cells:
        row: dict[str, Any] = {"loop": loop, "size": size}
        for arm in ARMS:
            row[f"{arm}_steps_s"] = med(loop, size, arm, "steps_s")
        for arm in ARMS:
            row[f"h2d_{arm}"], row[f"d2h_{arm}"] = med(loop, size, arm, "h2d"), med(loop, size, arm, "d2h")
            row[f"input_cpu_us_{arm}"] = med(loop, size, arm, "input_cpu_us")
        row.update(uncorrected_ratio=spread(rep_ratios(loop, size, "cc_upstream", "cc_off")),
                   ratio=spread(rep_ratios(loop, size, "cc_runtime", "cc_off")),
                   ratio_same_path=spread(rep_ratios(loop, size, "cc_runtime", "cc_off_runtime")),
                   h2d_upstream=row["h2d_cc_upstream"], h2d_runtime=row["h2d_cc_runtime"],
                   d2h_runtime=row["d2h_cc_runtime"], input_cpu_us_readback=row["input_cpu_us_cc_readback"],
                   input_cpu_us_runtime=row["input_cpu_us_cc_runtime"], staging_cpu_us=spread(staging(loop, size)),
                   cpu_us_upstream=med(loop, size, "cc_upstream", "cpu_us"),
                   cpu_us_runtime=med(loop, size, "cc_runtime", "cpu_us"))
        rows.append(row)

    def transfers(key: str, arm: str, loop: str | None = None) -> dict[str, Any] | None:
        # Per repetition, the worst cell of the loop(s).
        per_cell = [[r[key] for r in runs[(lp, sz, arm)]] for lp, sz in cells if loop in (None, lp)]
        if any(v is None for c in per_cell for v in c):
            return _counted([None], counter)
        return _counted([max(c[i] for c in per_cell) for i in range(cfg.reps)], counter)

    def worst_staging(loop: str, sizes: list[int]) -> dict[str, Any]:
        per_size = {sz: spread(staging(loop, sz)) for sz in sizes}
        sz = max(per_size, key=lambda k: per_size[k]["median"])
        return {**per_size[sz], ("batch" if loop == "decode" else "tokens"): sz}

    errors = sum(r["input_errors"] + r["readback_errors"] for rs in runs.values() for r in rs)
    above_one = ("the CC-off baseline is upstream's step, which copies each input and reads back each "
                 "output on the scheduler thread, where cc_runtime's arm stages its inputs in one crossing "
                 "and hands the readback to its worker; compare ratio_vs_cc_off_same_path")
    summary: dict[str, Any] = {
        "ratio_vs_cc_off": ratio_spread(ratios("cc_runtime"), above_one),
        "ratio_vs_cc_off_same_path": ratio_spread(ratios("cc_runtime", "cc_off_runtime")),
        "ratio_vs_cc_off_readback_only": ratio_spread(
            ratios("cc_readback"), "the CC-off baseline reads back each output inline on the scheduler thread, "
                                   "where this arm hands the readback to its worker"),
        "uncorrected_ratio_vs_cc_off": ratio_spread(ratios("cc_upstream")),
        "staging_cpu_us_per_step": worst_staging("decode", cfg.decode_sizes),
        "staging_cpu_us_per_step_prefill": worst_staging("prefill", [max(cfg.prefill_sizes)]),
        "h2d_transfers_per_step": transfers("h2d", "cc_runtime", "decode"),
        "h2d_transfers_per_step_prefill": transfers("h2d", "cc_runtime", "prefill"),
        "d2h_transfers_per_step": transfers("d2h", "cc_runtime"),
        "h2d_transfers_per_step_upstream": transfers("h2d", "cc_upstream"),
        "d2h_transfers_per_step_upstream": transfers("d2h", "cc_upstream"),
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
        f"{label}: CC arms use profile {ctx.emulate}; {cfg.reps} repetitions of {cfg.steps} steps per cell, "
        "arms interleaved in an order rotated per repetition; ratios are per repetition the worst cell's "
        "steps/s over the CC-off arm (spread over repetitions)",
        "ratio_vs_cc_off: over upstream's step with CC off; above 1.0 is never a gain, and above 1.0 in every "
        f"repetition is {above_one}. ratio_vs_cc_off_same_path: over cc_runtime's own path with CC off",
        "the cc_runtime arm runs what ships: host.to(device) inside the deferred scope (interception), one "
        "packed crossing, a device-to-device copy into the placeholders; staging_cpu_us_per_step = its "
        "scheduler-thread CPU in the input section minus cc_readback's (upstream's inline input copies under "
        "CC), per repetition, worst decode batch; _prefill: the largest prefill",
        f"crossings counted by {counter}",
    ]
    if label == "simulated":
        notes.append("simulated: torch runs one intra-op thread here (the simulated device's threads stand in "
                     "for the GPU; a parallel pack competing with them costs ms, an artefact no GPU host has)")
    if errors:
        notes.append(f"ERROR: {errors} wrong inputs or read-back values")
    return BenchResult(benchmark="step", summary=summary, rows=rows, columns=COLUMNS, notes=notes, model=model,
                       title=f"step: scheduler steps/s, CC off vs {label} CC ({ctx.emulate}): upstream, readback "
                             "worker, what ships (deferred H2D + readback worker)",
                       environment={"label": label, "transfer_counter": counter})
