"""``cc-runtime bench prefill``: eager vs piecewise CUDA graphs for prefill / mixed batches, CC off vs CC.

Tiny Llama-shaped model (:mod:`cc_runtime.models`), 16 to 2048 tokens in one flat batch, plus one
mixed batch (prefill and decode sequences together). Four arms: eager and piecewise, each with CC off
and with CC emulated. Reported per forward: latency and kernel launches (ATen ops that reach a
kernel, counted with a dispatch mode; replayed graphs launch none of their own).

On a GPU the emulated arms run under ``cc_runtime.emulator.cuda.emulate(profile)`` (every eager launch
pays the profile's extra cost, every graph replay its replay cost). If that emulator is not available,
the emulated latency is the CC-off measurement plus launches x ``launch_extra_s`` + replays x
``graph_replay_extra_s`` ("charged", and said so in the notes).

On CPU (no GPU) the numbers are *simulated*: latency = measured CPU time of the eager forward (at the
padded size for the piecewise arm: a replay runs the kernels eager runs there) as a stand-in for GPU
kernel time, + launches x per-launch cost + graph replays x per-replay cost, with the CC-off host costs
(cudaLaunchKernel 4.9 us, ISPASS'25 CC-off median; a graph launch guessed at the same) plus the
profile's extras under CC. A CPU is far slower than a GPU at the compute, so the ratios understate
what a GPU shows.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from .common import BenchContext, BenchResult, progress

DESCRIPTION = "piecewise CUDA graphs vs eager for prefill/mixed batches, CC off vs emulated CC"

FULL_TOKENS = [16, 32, 64, 100, 128, 256, 512, 1024, 2048]
QUICK_TOKENS = [16, 128, 512, 2048]
QUICK_TOKENS_CPU = [16, 100, 128, 512, 2048]
MIXED = ([124], 4)  # 124 prefill tokens + 4 decode sequences of one token = 128 tokens
LAUNCH_BASE_S = 4.9e-6  # CC-off cudaLaunchKernel median (ISPASS'25 artifact, cc-facts.md)
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


def _time(fn: Callable[[], Any], sync: Callable[[], None], iters: int, warmup: int = 1) -> float:
    """Median on a GPU; minimum on CPU, where other processes' load only ever adds time."""
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) if sync is not _no_sync else min(samples)


def _no_sync() -> None:
    pass


def _cpu_time(fn: Callable[[], Any], tokens: int, budget_s: float = 0.3) -> float:
    """Minimum over repeated runs within a small time budget (one run for the largest sizes)."""
    if tokens < 1024:
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while not samples or (time.perf_counter() - start < budget_s and len(samples) < 30 and tokens < 1024):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return min(samples)


def _pad(x: Any, n: int) -> Any:
    import torch

    return torch.cat([x, x.new_zeros(n - x.shape[0])])


@contextlib.contextmanager
def _cpu_threads(device: str) -> Iterator[None]:
    """One intra-op thread on CPU: on a small shared machine, spinning worker threads make a tiny
    model's forward 10x slower and noisy; one thread is steady."""
    if device == "cuda":
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    with _cpu_threads("cuda" if ctx.device == "cuda" else "cpu"):
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
            if device == "cuda":
                eager_off = _time(lambda: model(ids, pos), sync, iters)  # noqa: B023 - called right here
                graph_off = _time(lambda: runner(ids, pos), sync, iters)  # noqa: B023
                with _gpu_emulation(cc) as mode:
                    if mode == "emulated":
                        eager_cc = _time(lambda: model(ids, pos), sync, iters)  # noqa: B023
                        graph_cc = _time(lambda: runner(ids, pos), sync, iters)  # noqa: B023
                modes.add(mode)
                if mode == "charged":
                    eager_cc = eager_off + eager_count.count * cc.launch_extra_s
                    graph_cc = graph_off + graph_count.count * cc.launch_extra_s + replays * cc.graph_replay_extra_s
            else:
                # Simulated: the CPU's time for the forward stands in for GPU kernel time (a replay runs
                # the kernels eager runs at the padded size); host costs come from the launch model.
                modes.add("simulated")
                padded = runner.bucket_for(n) or n
                compute = _cpu_time(lambda: model(ids, pos), n)  # noqa: B023
                compute_padded = compute if padded == n else _cpu_time(
                    lambda: model(_pad(ids, padded), _pad(pos, padded)), padded)  # noqa: B023
                eager_off = compute + eager_count.count * LAUNCH_BASE_S
                graph_off = compute_padded + graph_count.count * LAUNCH_BASE_S + replays * REPLAY_BASE_S
                eager_cc = eager_off + eager_count.count * cc.launch_extra_s
                graph_cc = graph_off + graph_count.count * cc.launch_extra_s + replays * cc.graph_replay_extra_s
        bucket = runner.bucket_for(n)
        rows.append({
            "tokens": label, "bucket": bucket if bucket is not None else "eager",
            "eager_off_us": eager_off * 1e6, "piecewise_off_us": graph_off * 1e6,
            "eager_cc_us": eager_cc * 1e6, "piecewise_cc_us": graph_cc * 1e6,
            "speedup_cc": eager_cc / graph_cc, "cc_vs_off": graph_cc / graph_off,
            "launches_eager": eager_count.count, "launches_piecewise": graph_count.count, "replays": replays,
        })

    def row(label: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["tokens"] == label), None)

    r128 = row("128")
    kind = "simulated" if device == "cpu" else ("emulated" if modes == {"emulated"} else "emulated+charged")
    summary: dict[str, float | int | None] = {
        "max_abs_diff_vs_eager": max_diff,
        "speedup_vs_eager_128": r128["speedup_cc"] if r128 else None,
        "ratio_vs_cc_off_128": r128["cc_vs_off"] if r128 else None,
        "speedup_vs_eager_16": row(str(tokens[0]))["speedup_cc"] if row(str(tokens[0])) else None,  # type: ignore[index]
        "launches_eager_128": r128["launches_eager"] if r128 else None,
        "launches_piecewise_128": r128["launches_piecewise"] if r128 else None,
        "capture_s": capture_s,
        "captured_sizes": len(runner.buckets),
        "pieces": runner.num_pieces,
    }
    mixed = row("mixed 128")
    if mixed:
        summary["speedup_vs_eager_mixed_128"] = mixed["speedup_cc"]
    notes = [
        f"CC arms: profile {cc.name!r} (+{cc.launch_extra_s * 1e6:.1f} us per eager launch, "
        f"+{cc.graph_replay_extra_s * 1e6:.1f} us per graph replay)",
        "launches = ATen ops that reach a kernel (dispatch-mode count); replays = piece graph replays",
        f"model: tiny Llama, {cfg.num_layers} layers, hidden {cfg.hidden_size}, float32; "
        f"{runner.num_pieces} pieces around {runner.num_split_ops} attention split ops; "
        f"{len(runner.buckets)} captured sizes up to {runner.buckets.max} in {capture_s:.1f}s",
        "max_abs_diff_vs_eager compares with eager at the real (unpadded) token count; against eager at "
        "the padded size the results are bitwise equal (tests/graphs)",
    ]
    if device == "cpu":
        notes.append("SIMULATED: latency = measured CPU time of the eager forward (padded size for piecewise) "
                     "+ launches x 4.9 us + replays x 4.9 us (CC-off host costs) + the profile's extras under "
                     "CC; CPU compute is far slower than a GPU's, so the ratios understate what a GPU shows")
    elif "charged" in modes:
        notes.append("CC arms CHARGED, not emulated: cc_runtime.emulator.cuda was unavailable, so the CC "
                     "latency is the CC-off latency + launches x launch_extra + replays x replay_extra")
    else:
        notes.append("CC arms EMULATED on this GPU with cc_runtime.emulator.cuda.emulate")
    return BenchResult(
        benchmark="prefill", summary=summary, rows=rows,
        columns=["tokens", "bucket", "eager_off_us", "piecewise_off_us", "eager_cc_us", "piecewise_cc_us",
                 "speedup_cc", "cc_vs_off", "launches_eager", "launches_piecewise", "replays"],
        notes=notes, environment={"latency_kind": kind},
        title=f"prefill: eager vs piecewise graphs, CC off vs {kind} CC ({cc.name}) [{kind}]")


__all__ = ["DESCRIPTION", "add_arguments", "run"]
