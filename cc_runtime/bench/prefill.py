"""``cc-runtime bench prefill``: eager vs piecewise CUDA graphs for prefill / mixed batches, CC off vs CC.

Tiny Llama-shaped model (:mod:`cc_runtime.models`), 16 to 2048 tokens in one flat batch, plus one
mixed batch (prefill and decode sequences together). Four arms: eager and piecewise, each with CC off
and with CC emulated. Reported per forward: latency and kernel launches (ATen ops that reach a
kernel, counted with a dispatch mode; replayed graphs launch none of their own).

On a GPU the emulated arms run under ``cc_runtime.emulator.cuda.emulate(profile)`` (every eager launch
pays the profile's extra cost, every graph replay its replay cost) and are measured. If that emulator is
not available, no CC figure is measured: the CC estimate (CC-off measurement + launches x
``launch_extra_s`` + replays x ``graph_replay_extra_s``) goes under ``model``.

On CPU (no GPU) both arms are timed as they run here: eager, and the piecewise runner itself (its CPU
path: the same splitting, padding, buffers and pieces, with a stand-in replay). No CC is measured on
CPU; the CC estimate from launch counts and the profile (CC-off host costs: cudaLaunchKernel 4.9 us,
ISPASS'25 CC-off median; a graph launch guessed at the same) goes under ``model``, never ``summary``.
Every measured value is a median [min-max] over samples timed back to back (eager, piecewise, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import partial
from .common import BenchContext, BenchResult, modelled, one_intra_op_thread, progress, ratio_spread, spread

DESCRIPTION = "piecewise CUDA graphs vs eager for prefill/mixed batches, CC off vs emulated CC"

FULL_TOKENS = [16, 32, 64, 100, 128, 256, 512, 1024, 2048]
QUICK_TOKENS = [16, 128, 512, 2048]
QUICK_TOKENS_CPU = [16, 100, 128, 512, 2048]
MIXED = ([124], 4)  # 124 prefill tokens + 4 decode sequences of one token = 128 tokens
LAUNCH_BASE_S = 4.9e-6  # CC-off cudaLaunchKernel median (ISPASS'25 artifact, H100 + Intel TDX)
REPLAY_BASE_S = 4.9e-6  # CC-off cudaGraphLaunch: guess, same as one kernel launch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-tokens", type=int, default=2048, help="largest captured size (default 2048)")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the tiny model")
    parser.add_argument("--iters", type=int, default=0, help="timed forwards per point (default: auto)")


def _sync(device: str) -> Callable[[], None]:
    if device == "cuda":
        import torch

        return torch.cuda.synchronize
    return _no_sync


def _no_sync() -> None:
    pass


def paired_samples(fns: list[Callable[[], Any]], sync: Callable[[], None], n: int, budget_s: float | None = None,
                   warmup: int = 1) -> list[list[float]]:
    """Seconds per call of each of ``fns``, timed alternately ``n`` times (at least 3 when a budget cuts
    it short), so sample i of every function saw the same background load and ratios can be paired."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync()
    out: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    for i in range(n):
        if budget_s is not None and i >= 3 and time.perf_counter() - start > budget_s:
            break
        for fn, samples in zip(fns, out, strict=True):
            t0 = time.perf_counter()
            fn()
            sync()
            samples.append(time.perf_counter() - t0)
    return out


@contextlib.contextmanager
def _gpu_emulation(profile: Any) -> Iterator[str]:
    """Yields "emulated" inside the torch-level emulator, or "charged" when it is not available."""
    try:
        from ..emulator.cuda import emulate
    except Exception:  # noqa: BLE001 - fall back to charging the profile's costs by hand
        yield "charged"
        return
    try:
        cm = emulate(profile)
        cm.__enter__()
    except Exception:  # noqa: BLE001 - e.g. refused on real CC hardware or another emulation active
        yield "charged"
        return
    try:
        yield "emulated"
    finally:
        cm.__exit__(None, None, None)


def run(ctx: BenchContext) -> BenchResult:
    with one_intra_op_thread("cuda" if ctx.device == "cuda" else "cpu"):
        return _run(ctx)


def _run(ctx: BenchContext) -> BenchResult:
    import torch

    from ..emulator.profiles import load_profile
    from ..graphs import Buckets, LaunchCounter, PiecewiseCudaGraphRunner, default_capture_sizes
    from ..models import TinyLlamaConfig, build_tiny_llama, dummy_batch, make_batch

    device = "cuda" if ctx.device == "cuda" else "cpu"
    cc = load_profile(ctx.emulate)
    max_tokens = int(ctx.extra.get("max_tokens") or 2048)
    cfg = TinyLlamaConfig(num_layers=int(ctx.extra.get("layers") or 4))
    if ctx.quick:
        tokens = QUICK_TOKENS if device == "cuda" else QUICK_TOKENS_CPU
    else:
        tokens = FULL_TOKENS
    tokens = [n for n in tokens if n <= max_tokens] or [min(16, max_tokens)]
    iters = int(ctx.extra.get("iters") or 0) or 20
    sync = _sync(device)
    torch.manual_seed(ctx.seed)

    model = build_tiny_llama(cfg, seed=ctx.seed, device=device)
    # On CPU only the measured sizes are captured (a full sweep of sizes would take minutes there);
    # on a GPU the default vLLM-like sizes up to --max-tokens, as a server would.
    capture_sizes = None
    if device != "cuda":  # only the buckets the sweep lands in (100 -> 104: padding shows)
        buckets = Buckets(default_capture_sizes(max_tokens))
        capture_sizes = sorted({buckets.bucket_for(n) or n for n in [*tokens, 128] if n <= max_tokens})
    t0 = time.perf_counter()
    runner = PiecewiseCudaGraphRunner(model, make_batch([8], cfg, device=device)[1:], max_tokens=max_tokens,
                                      capture_sizes=capture_sizes, batch_context=dummy_batch)
    with torch.no_grad():
        runner.capture()
    sync()
    capture_s = time.perf_counter() - t0

    cases: list[tuple[str, list[int]]] = [(str(n), [n]) for n in tokens]
    if 128 <= max_tokens:
        prefill, decodes = MIXED
        cases.append(("mixed 128", prefill + [1] * decodes))

    rows: list[dict[str, Any]] = []
    measured: dict[str, dict[str, list[float]]] = {}  # case -> arm -> seconds per forward
    modes: set[str] = set()
    max_diff = 0.0
    for label, lens in progress(cases, desc="prefill"):
        batch, ids, pos = make_batch(lens, cfg, seed=ctx.seed + sum(lens), device=device)
        n = batch.num_tokens
        with torch.no_grad(), batch.active():
            eager_out = model(ids, pos)
            graph_out = runner(ids, pos)
            max_diff = max(max_diff, float((eager_out - graph_out).abs().max()))
            del eager_out, graph_out
            with LaunchCounter() as eager_count:
                model(ids, pos)
            replays0 = runner.stats.replays
            with LaunchCounter() as graph_count:
                runner(ids, pos)
            replays = runner.stats.replays - replays0

            def eager() -> None:
                model(ids, pos)  # noqa: B023 - called within this iteration

            def graphs() -> None:
                runner(ids, pos)  # noqa: B023

            # CPU: a time budget per point (the largest forwards take ~0.1 s there); GPU: fixed count.
            budget = None if device == "cuda" else (0.4 if n < 1024 else 0.0)
            arms = dict(zip(("eager_off", "piecewise_off"), paired_samples([eager, graphs], sync, iters, budget),
                            strict=True))
            if device == "cuda":
                with _gpu_emulation(cc) as mode:
                    if mode == "emulated":
                        arms.update(zip(("eager_cc", "piecewise_cc"), paired_samples([eager, graphs], sync, iters),
                                        strict=True))
                modes.add(mode)
            else:
                modes.add("simulated")
        measured[label] = arms
        bucket = runner.bucket_for(n)
        med = {k: statistics.median(v) for k, v in arms.items()}
        row: dict[str, Any] = {
            "tokens": label, "bucket": bucket if bucket is not None else "eager",
            "eager_off_us": med["eager_off"] * 1e6, "piecewise_off_us": med["piecewise_off"] * 1e6,
            "piecewise_vs_eager_off": _paired_ratio(arms["piecewise_off"], arms["eager_off"]),
            "launches_eager": eager_count.count, "launches_piecewise": graph_count.count, "replays": replays,
        }
        if "eager_cc" in arms:
            row.update(eager_cc_us=med["eager_cc"] * 1e6, piecewise_cc_us=med["piecewise_cc"] * 1e6,
                       speedup_cc=_paired_ratio(arms["eager_cc"], arms["piecewise_cc"]),
                       # throughput under CC over CC off (<= 1), as ratio_vs_cc_off reads in every benchmark
                       ratio_vs_cc_off=ratio_spread(_paired_ratio(arms["piecewise_off"], arms["piecewise_cc"], raw=True)))
        # What CC would add, from the launch count and the profile: a model, never a measurement.
        eager_model = med["eager_off"] + eager_count.count * (LAUNCH_BASE_S + cc.launch_extra_s)
        graph_model = (med["piecewise_off"] + graph_count.count * (LAUNCH_BASE_S + cc.launch_extra_s)
                       + replays * (REPLAY_BASE_S + cc.graph_replay_extra_s))
        row.update(model_eager_cc_us=eager_model * 1e6, model_piecewise_cc_us=graph_model * 1e6,
                   model_speedup_cc=eager_model / graph_model)
        rows.append(row)
        partial.measured(row)  # on disk at once: a run killed at its cap keeps the sizes it finished
    return _result(ctx, cc, cfg, runner, rows, measured, modes, max_diff, capture_s, tokens)


def _paired_ratio(num: list[float], den: list[float], raw: bool = False) -> Any:
    """``num[i] / den[i]`` over paired samples (timed back to back), as a spread (``raw``: the list)."""
    ratios = [a / b for a, b in zip(num, den, strict=True)]
    return ratios if raw else spread(ratios)


def _result(ctx: BenchContext, cc: Any, cfg: Any, runner: Any, rows: list[dict[str, Any]],
            measured: dict[str, dict[str, list[float]]], modes: set[str], max_diff: float, capture_s: float,
            tokens: list[int]) -> BenchResult:
    device = "cuda" if ctx.device == "cuda" else "cpu"

    def row(label: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["tokens"] == label), None)

    kind = "simulated" if device == "cpu" else ("emulated" if modes == {"emulated"} else "emulated+charged")
    summary: dict[str, Any] = {"max_abs_diff_vs_eager": max_diff, "capture_s": spread([capture_s])}
    model: dict[str, Any] = {}
    for label, suffix in (("128", "128"), (str(tokens[0]), str(tokens[0])), ("mixed 128", "mixed_128")):
        r, arms = row(label), measured.get(label)
        if r is None or arms is None:
            continue
        summary[f"eager_us_{suffix}"] = spread(x * 1e6 for x in arms["eager_off"])
        summary[f"piecewise_us_{suffix}"] = spread(x * 1e6 for x in arms["piecewise_off"])
        summary[f"piecewise_vs_eager_{suffix}"] = r["piecewise_vs_eager_off"]
        if "speedup_cc" in r:  # measured under the GPU emulator
            summary[f"speedup_vs_eager_{suffix}"] = r["speedup_cc"]
            summary[f"ratio_vs_cc_off_{suffix}"] = r["ratio_vs_cc_off"]
        source = (f"measured CC-off time + launches x ({LAUNCH_BASE_S * 1e6:.1f} us CC-off launch, ISPASS'25 "
                  f"+ {cc.launch_extra_s * 1e6:.1f} us profile {cc.name}) + replays x "
                  f"({REPLAY_BASE_S * 1e6:.1f} + {cc.graph_replay_extra_s * 1e6:.1f} us)")
        model[f"speedup_vs_eager_{suffix}"] = modelled(r["model_speedup_cc"], source)
        model[f"launches_eager_{suffix}"] = modelled(r["launches_eager"], "dispatch-mode count of ATen ops that "
                                                      "reach a kernel (a launch proxy)")
        model[f"launches_piecewise_{suffix}"] = modelled(r["launches_piecewise"], "dispatch-mode count outside "
                                                          "replayed pieces (a launch proxy)")
    model["captured_sizes"] = modelled(len(runner.buckets), "configuration: capture sizes")
    model["pieces"] = modelled(runner.num_pieces, "the split of the tiny model at its attention ops")
    notes = [
        f"CC profile {cc.name!r}: +{cc.launch_extra_s * 1e6:.1f} us per eager launch, "
        f"+{cc.graph_replay_extra_s * 1e6:.1f} us per graph replay",
        "launches = ATen ops that reach a kernel (dispatch-mode count); replays = piece graph replays",
        f"model: tiny Llama, {cfg.num_layers} layers, hidden {cfg.hidden_size}, float32; "
        f"{runner.num_pieces} pieces around {runner.num_split_ops} attention split ops; "
        f"{len(runner.buckets)} captured sizes up to {runner.buckets.max} in {capture_s:.1f}s",
        "max_abs_diff_vs_eager compares with eager at the real (unpadded) token count; against eager at "
        "the padded size the results are bitwise equal (tests/graphs)",
        "summary: median [min-max] over paired samples; model_* columns and the model block are computed",
    ]
    if device == "cpu":
        notes.append("SIMULATED (CPU): eager and piecewise are both timed as they run on this CPU (the runner's "
                     "CPU path: padding, buffers, pieces); no CC is measured on CPU: the CC figures are the "
                     "model (measured time + launch count x the profile's launch costs)")
    elif "charged" in modes:
        notes.append("CC arms not measured: cc_runtime.emulator.cuda was unavailable; the CC figures are the "
                     "model (measured CC-off time + launch count x the profile's costs)")
    else:
        notes.append("CC arms EMULATED on this GPU with cc_runtime.emulator.cuda.emulate")
    columns = ["tokens", "bucket", "eager_off_us", "piecewise_off_us", "piecewise_vs_eager_off"]
    if any("speedup_cc" in r for r in rows):
        columns += ["eager_cc_us", "piecewise_cc_us", "speedup_cc", "ratio_vs_cc_off"]
    columns += ["model_speedup_cc", "launches_eager", "launches_piecewise", "replays"]
    return BenchResult(
        benchmark="prefill", summary=summary, model=model, rows=rows, columns=columns,
        notes=notes, environment={"latency_kind": kind},
        title=f"prefill: eager vs piecewise graphs, CC off vs {kind} CC ({cc.name}) [{kind}]")


__all__ = ["DESCRIPTION", "add_arguments", "paired_samples", "run"]
