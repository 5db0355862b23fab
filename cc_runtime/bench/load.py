"""``cc-runtime bench load``: a checkpoint reaching the device, per-tensor (upstream) vs chunked (cc_runtime).

Checkpoints are generated on disk from real models' tensor lists (:mod:`.load_shapes`: Llama-3-8B
dense, Qwen3-30B-A3B MoE, real tensor and shard counts, bytes scaled to fit this machine; the scale is
in the result). Arms, per shape, every repetition in the same order:

* CC off: ``upstream`` and ``cc_runtime`` (does the chunked loader help without CC too?);
* emulated CC, for each profile (h100, b300): ``upstream``, SGLang's ``multi_thread`` / ``buffered``
  iterators where SGLang imports here, and ``cc_runtime``.
``--quick`` (what ``cc-runtime bench`` runs in CI) keeps CC-off ``upstream`` and the ``--emulate``
profile's ``upstream`` and ``cc_runtime`` arms, on smaller checkpoints, the MoE one cut to its first 12
layers (4,719 tensors; stated in the notes).
``fastsafetensors`` and ``runai_streamer`` are listed with the reason they are not run.

Each arm copies every tensor into a preallocated, poisoned parameter (what a weight_loader does), and
the parameters are then compared byte for byte with the files. ``load_s`` is the wall time from the
first read to the last copy done. ``h2d_crossings`` is counted by the emulator (the simulated device's
``copies_h2d`` on CPU; the GPU emulator's ``h2d`` on CUDA). ``efficiency_vs_bound`` is the profile's
lower bound for the bytes and crossings actually made (``bytes / pinned H2D bandwidth + crossings x
fixed cost``) over the measured ``load_s``. On the simulated device the copies' costs are the
profile's (waits), the file reads and memory copies are this machine's own.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from .common import BenchContext, BenchResult, modelled, one_intra_op_thread, spread

DESCRIPTION = "weight loading: per-tensor crossings (upstream) vs chunked (cc_runtime.loading), dense + MoE"

#: Byte budget per shape (MiB): quick / full; --size-gb overrides (split 1:2 between dense and MoE).
_BUDGET_MB = {True: {"dense": 32, "moe": 64}, False: {"dense": 256, "moe": 512}}
_PROFILES = ("h100", "b300")
#: --quick (CI, two shared cores): the MoE checkpoint keeps its first 12 of 48 layers (4,719 of 18,867
#: tensors; per-tensor work sets a CPU run's length); the full run has the real counts.
_QUICK_LAYERS = {"moe": 12}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size-gb", type=float, default=None,
                   help="total checkpoint bytes over both shapes (GB; dense 1/3, MoE 2/3)")
    p.add_argument("--chunk-mb", type=int, default=None, help="loader chunk (default: CC_RUNTIME_LOAD_CHUNK_MB)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per arm (default 1 quick, 3 full)")
    p.add_argument("--shapes", default="dense,moe", help="comma list of dense, moe")
    p.add_argument("--dir", default=None, help="generate checkpoints here and keep them (default: a temp dir)")
    p.add_argument("--all-arms", action="store_true",
                   help="every arm and profile at the real tensor counts even with --quick (gpu_check.py)")


def _bound_s(profile: Any, nbytes: int, crossings: int) -> float:
    return nbytes / profile.h2d_bandwidth_Bps + crossings * profile.h2d_fixed_s


#: The smallest chunk the bench scales down to: below it the per-crossing fixed cost, not bandwidth,
#: would set the time (h100: 21.9 us against 0.34 ms for 1 MiB).
_MIN_CHUNK = 1 << 20


def scaled_chunk(chunk_bytes: int, scale: float) -> int:
    """The loader's chunk for a checkpoint scaled by ``scale``: as many chunks as the real checkpoint
    would cross in, at least 1 MiB, a whole number of KiB."""
    return max(_MIN_CHUNK, int(chunk_bytes * scale) >> 10 << 10)


def _run_floor(ctx: BenchContext, folder: str, profile: str, params_gpu: dict[str, Any] | None) -> dict[str, Any]:
    """Every tensor already on the device, copied into its parameter under ``profile``: the part of a
    load that is the weight_loaders' own (one D2D per tensor), timed as the arms are."""
    from . import load_arms as la

    if ctx.simulated:
        from ..emulator import SimDevice

        with SimDevice(profile, name="sim-load-floor", seed=ctx.seed) as sim:
            params = la.allocate(folder, None, sim)
            ready = {n: sim.mark_device(t.clone()) for n, t in la.file_tensors(folder)}
            t0 = time.perf_counter()
            la.consume(iter(ready.items()), params, sim)
            return {"load_s": time.perf_counter() - t0}
    import torch

    from ..emulator import cuda as ec

    assert params_gpu is not None
    ready = {n: t.to("cuda") for n, t in la.file_tensors(folder)}
    torch.cuda.synchronize()
    ec.enable(profile)
    try:
        t0 = time.perf_counter()
        la.consume(iter(ready.items()), params_gpu, None)
        load_s = time.perf_counter() - t0
    finally:
        ec.disable()
    del ready
    return {"load_s": load_s}


def _run_arm(ctx: BenchContext, folder: str, profile: str | None, arm: str, chunk_bytes: int,
             params_gpu: dict[str, Any] | None) -> dict[str, Any]:
    from . import load_arms as la

    if ctx.simulated:
        from ..emulator import SimDevice

        with SimDevice(profile, name=f"sim-load-{arm}", seed=ctx.seed) as sim:
            params = la.allocate(folder, None, sim)
            la.poison(params)
            it, label, _ = la.iterator_for(arm, folder, None, sim, chunk_bytes)
            before = sim.stats["copies_h2d"]
            t0 = time.perf_counter()
            n = la.consume(it, params, sim)
            load_s = time.perf_counter() - t0
            crossings = sim.stats["copies_h2d"] - before
            bad = la.compare(folder, params, None)
            return {"load_s": load_s, "h2d_crossings": crossings, "tensors": n, "mismatched": bad, "iterator": label}
    import torch

    from ..emulator import cuda as ec

    assert params_gpu is not None
    la.poison(params_gpu)
    torch.cuda.synchronize()
    em = ec.enable(profile) if profile else None
    try:
        it, label, loader = la.iterator_for(arm, folder, "cuda", None, chunk_bytes)
        t0 = time.perf_counter()
        n = la.consume(it, params_gpu, None)
        load_s = time.perf_counter() - t0
        crossings = em.stats["h2d"] if em is not None else (loader.transport.stats["h2d"] if loader else n)
    finally:
        if em is not None:
            ec.disable()
    bad = la.compare(folder, params_gpu, "cuda")
    counted = "emulator" if em is not None else ("loader" if loader else "one per tensor (not counted)")
    return {"load_s": load_s, "h2d_crossings": crossings, "tensors": n, "mismatched": bad, "iterator": label,
            "counted_by": counted}


def run(ctx: BenchContext) -> BenchResult:
    from ..emulator.profiles import load_profile
    from ..loading import chunk_bytes_setting
    from . import load_arms as la
    from .load_shapes import SHAPES, generate

    extra = ctx.extra
    shapes = [s.strip() for s in str(extra.get("shapes") or "dense,moe").split(",") if s.strip()]
    for s in shapes:
        if s not in SHAPES:
            raise ValueError(f"--shapes: unknown shape {s!r} (dense, moe)")
    size_gb = extra.get("size_gb")
    budgets = ({"dense": int(size_gb * 1e9 / 3), "moe": int(size_gb * 2e9 / 3)} if size_gb
               else {k: v << 20 for k, v in _BUDGET_MB[ctx.quick].items()})
    explicit_chunk = extra.get("chunk_mb") is not None
    setting_chunk = chunk_bytes_setting(extra.get("chunk_mb"))
    chunks: dict[str, int] = {}
    reps = max(1, int(extra.get("reps") or (1 if ctx.quick else 3)))
    main = load_profile(ctx.emulate)
    small = ctx.quick and not extra.get("all_arms")
    # Quick (CI): the main profile only, no peers and no CC-off loader arm (per-tensor work dominates a
    # small machine's run time); full: both profiles, every arm.
    profiles = [main.name] + ([] if small else [p for p in _PROFILES if p != main.name])
    peers = la.sglang_iterators()
    cc_arms = ["upstream"] + ([a for a in ("multi_thread", "buffered") if a in peers]
                              if isinstance(peers, dict) and not small else []) + ["cc_runtime"]
    plan: list[tuple[str | None, str]] = [(None, "upstream")] + ([] if small else [(None, "cc_runtime")]) + \
        [(p, a) for p in profiles for a in cc_arms]
    keep = extra.get("dir")
    root = keep or tempfile.mkdtemp(prefix="cc_runtime-bench-load-")
    facts: dict[str, Any] = {}
    results: dict[tuple[str, str | None, str], list[dict[str, Any]]] = {}
    try:
        with one_intra_op_thread(ctx.device):
            for shape in shapes:
                folder = f"{root}/{shape}"
                t0 = time.perf_counter()
                facts[shape] = generate(folder, shape, budgets[shape], _QUICK_LAYERS.get(shape) if small else None)
                facts[shape]["generate_s"] = round(time.perf_counter() - t0, 2)
                chunks[shape] = setting_chunk if explicit_chunk else scaled_chunk(setting_chunk, facts[shape]["scale"])
                params_gpu = la.allocate(folder, "cuda", None) if not ctx.simulated else None
                for _ in range(reps):
                    for prof, arm in plan:
                        results.setdefault((shape, prof, arm), []).append(
                            _run_arm(ctx, folder, prof, arm, chunks[shape], params_gpu))
                    results.setdefault((shape, main.name, "floor"), []).append(
                        _run_floor(ctx, folder, main.name, params_gpu))
                del params_gpu
                if not keep:
                    shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return _result(ctx, shapes, plan, results, facts, chunks, main, peers)


def _result(ctx: BenchContext, shapes: list[str], plan: Sequence[tuple[str | None, str]],
            results: dict[tuple[str, str | None, str], list[dict[str, Any]]], facts: dict[str, Any],
            chunks: dict[str, int], main: Any, peers: Any) -> BenchResult:
    import math

    from ..emulator.profiles import load_profile
    from . import load_arms as la

    rows: list[dict[str, Any]] = []
    eff: dict[str, dict[str, list[float]]] = {}
    speed: dict[str, dict[str, Any]] = {}
    speed_off: dict[str, Any] = {}
    summary: dict[str, Any] = {"load_s": {}, "h2d_crossings": {}, "h2d_crossing_bound": {}, "effective_gbps": {}}
    mismatched = 0
    over_bound = 0.0
    for shape in shapes:
        nbytes = facts[shape]["bytes"]
        bound_crossings = math.ceil(nbytes / chunks[shape]) + facts[shape]["files"]
        summary.setdefault("consume_floor_s", {})[shape] = spread(
            r["load_s"] for r in results[(shape, main.name, "floor")])
        for prof, arm in plan:
            runs = results[(shape, prof, arm)]
            p = load_profile(prof) if prof else None
            times = [r["load_s"] for r in runs]
            crossings = runs[-1]["h2d_crossings"]
            bad = max(r["mismatched"] for r in runs)
            mismatched += bad
            base = results[(shape, prof, "upstream")]
            speedups = [b["load_s"] / r["load_s"] for b, r in zip(base, runs, strict=True)]
            e = [_bound_s(p, nbytes, r["h2d_crossings"]) / r["load_s"] for r in runs] if p else []
            rows.append({"shape": shape, "cc": prof or "off", "arm": arm, "load_s": spread(times)["median"],
                         "h2d_crossings": crossings, "effective_gbps": nbytes / spread(times)["median"] / 1e9,
                         "efficiency_vs_bound": spread(e)["median"] if e else None,
                         "speedup_vs_upstream": spread(speedups)["median"], "bytes_identical": bad == 0,
                         "iterator": runs[-1]["iterator"]})
            if arm != "cc_runtime":
                continue
            if prof is None:
                speed_off[shape] = spread(speedups)
                continue
            speed.setdefault(prof, {})[shape] = spread(speedups)
            eff.setdefault(prof, {})[shape] = e
            if prof == main.name:
                summary["load_s"][shape] = spread(times)
                summary["h2d_crossings"][shape] = crossings
                summary["h2d_crossing_bound"][shape] = bound_crossings
                summary["effective_gbps"][shape] = spread([nbytes / t / 1e9 for t in times])
                over_bound = max(over_bound, crossings / bound_crossings)
    worst = [min(vals) for vals in zip(*eff[main.name].values(), strict=True)]
    summary["efficiency_vs_bound"] = spread(worst)
    summary["efficiency_vs_bound_by_shape"] = {s: spread(v) for s, v in eff[main.name].items()}
    summary["efficiency_vs_bound_by_profile"] = {p: {s: spread(v) for s, v in d.items()} for p, d in eff.items()}
    summary["h2d_crossings_over_bound"] = over_bound
    summary["speedup_vs_upstream_cc"] = speed
    summary["speedup_vs_upstream_cc_off"] = speed_off  # CC off: does the chunked loader help there too?
    summary["bytes_identical"] = mismatched == 0
    summary["mismatched_tensors"] = mismatched
    not_run = dict(la.NOT_RUN)
    if isinstance(peers, str):
        not_run["multi_thread / buffered"] = peers
    kind = "simulated device (CPU threads)" if ctx.simulated else "CUDA GPU, CC emulated"
    notes = [f"{s}: {f['model']}-shaped, {f['tensors']} tensors (real: {f['real_tensors']}; layers: {f['layers']}) "
             f"in {f['files']} files, {f['bytes'] / 1e6:.0f} MB "
             f"(scale {f['scale']:.4g} of the real {f['real_bytes_bf16'] / 1e9:.1f} GB bf16), generated in "
             f"{f['generate_s']} s" for s, f in facts.items()]
    notes += [f"not run: {k}: {v}" for k, v in not_run.items()]
    notes.append("chunk per shape: " + ", ".join(f"{s} {c / 2**20:.3g} MiB" for s, c in chunks.items())
                 + ("" if ctx.extra.get("chunk_mb") is not None else
                    " (the loader's chunk, CC_RUNTIME_LOAD_CHUNK_MB, times the checkpoint's scale, at least 1 MiB: "
                    "the scaled checkpoint crosses in about as many chunks as the real one, so the pipeline fills "
                    "and drains as it would; --chunk-mb sets it unscaled)")
                 + f"; h2d_crossings <= ceil(bytes/chunk) + files = {summary['h2d_crossing_bound']}")
    notes.append("consume_floor_s: in the same run, under the main profile, every tensor already in device memory "
                 "copied into its parameter (the weight_loaders' part: one D2D per tensor, which no iterator "
                 "avoids). Bytes are scaled down and tensor counts are not, so where it approaches the bound, "
                 "efficiency_vs_bound cannot reach 0.9 at this scale whatever the iterator does")
    model = {
        "bound_s": modelled({s: {p: _bound_s(load_profile(p), facts[s]["bytes"], summary["h2d_crossings"][s])
                                 for p in eff} for s in shapes},
                            "bytes / profile h2d_bandwidth_Bps + h2d_crossings x profile h2d_fixed_s"),
        "profiles": modelled({p: {"h2d_bandwidth_Bps": load_profile(p).h2d_bandwidth_Bps,
                                  "h2d_fixed_s": load_profile(p).h2d_fixed_s} for p in eff},
                             "cc_runtime.emulator.profiles"),
    }
    return BenchResult(
        benchmark="load", summary=summary, rows=rows,
        columns=["shape", "cc", "arm", "load_s", "h2d_crossings", "effective_gbps", "efficiency_vs_bound",
                 "speedup_vs_upstream", "bytes_identical", "iterator"],
        notes=notes, model=model,
        environment={"not_run": not_run, "checkpoints": facts, "chunk_bytes": chunks,
                     "sglang": "imported" if isinstance(peers, dict) else peers},
        title=f"weight loading ({kind}; CC arms emulated; load_s median of the repetitions)",
    )
