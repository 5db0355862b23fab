"""calibrate's measurements: host wall-clock timings and host-vs-device ordering, nothing from the emulator.

Every measurement is taken from the host with ``time.perf_counter`` (CUDA events may lie under CC:
that is one of the things measured) and ordering is read from events recorded *before* the call:
"the copy waited for queued work" means an event recorded after that work was already complete when
the copy returned. Raw repetitions are kept so every derived value can carry its spread.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .targets import Target

KiB, MiB = 1024, 1024 * 1024
perf = time.perf_counter


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    reps: int
    big_reps: int
    launch_n: int
    launch_reps: int
    graph_nodes: int
    graph_n: int
    event_pairs: int
    event_busy_s: float
    busy_s: float
    serial_copies: int


QUICK = Plan(sizes=(64, 64 * KiB, MiB, 16 * MiB, 64 * MiB), reps=7, big_reps=3, launch_n=100, launch_reps=9,
             graph_nodes=10, graph_n=30, event_pairs=80, event_busy_s=0.004, busy_s=0.03, serial_copies=12)
FULL = Plan(sizes=tuple(64 * 4 ** i for i in range(11)), reps=21, big_reps=7, launch_n=200, launch_reps=21,
            graph_nodes=10, graph_n=50, event_pairs=300, event_busy_s=0.004, busy_s=0.05, serial_copies=30)

COPY_KINDS = (("h2d", True), ("d2h", True), ("h2d", False), ("d2h", False))


def copy_key(direction: str, pinned: bool) -> str:
    return f"{'pinned' if pinned else 'pageable'}_{direction}"


def _timed(fn: Callable[[], Any], reps: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t0 = perf()
        fn()
        out.append(perf() - t0)
    return out


def copies(t: Target, plan: Plan) -> dict[str, dict[int, list[float]]]:
    """Seconds per copy (issue + wait for it), by kind and size, on an idle stream of its own."""
    out: dict[str, dict[int, list[float]]] = {}
    stream = t.api.Stream()
    for direction, pinned in COPY_KINDS:
        per: dict[int, list[float]] = {}
        for n in plan.sizes:
            host, dev = t.host(n, pinned), t.device(n)
            dst, src = (dev, host) if direction == "h2d" else (host, dev)

            def one(dst: Any = dst, src: Any = src) -> None:
                t.copy(dst, src)
                stream.synchronize()

            with t.on(stream):
                per[n] = _timed(one, plan.big_reps if n >= 16 * MiB else plan.reps)
            del host, dev, dst, src
        out[copy_key(direction, pinned)] = per
    return out


def _waits(t: Target, plan: Plan, direction: str, pinned: bool, where: str) -> dict[str, Any]:
    """Queue ``busy_s`` of device work, then issue a small copy; did the copy wait for that work?

    ``where``: ``same`` (work on the copy's stream), ``other`` (another stream, same thread) or
    ``thread`` (another stream, queued by another thread)."""
    host, dev = t.host(4 * KiB, pinned), t.device(4 * KiB)
    dst, src = (dev, host) if direction == "h2d" else (host, dev)
    work, copy_stream = t.api.Stream(), t.api.Stream()
    if where == "same":
        copy_stream = work
    t.synchronize()
    box: dict[str, Any] = {}

    def queue() -> None:
        with t.on(work):
            t.busy(plan.busy_s)
            ev = t.api.Event()
            ev.record()
            box["ev"] = ev

    if where == "thread":
        th = threading.Thread(target=queue)
        th.start()
        th.join()
    else:
        queue()
    t0 = perf()
    with t.on(copy_stream):
        t.copy(dst, src)
    call_s = perf() - t0
    waited = bool(box["ev"].query())
    t.synchronize()
    return {"waited": waited, "call_s": call_s, "busy_s": plan.busy_s}


def blocking(t: Target, plan: Plan) -> dict[str, Any]:
    """Which copies wait for queued device work (majority of 3 trials each)."""
    cases = {
        "pinned_h2d_waits_for_its_stream": ("h2d", True, "same"),
        "pinned_d2h_waits_for_its_stream": ("d2h", True, "same"),
        "pageable_h2d_waits_for_its_stream": ("h2d", False, "same"),
        "pinned_h2d_waits_for_other_stream": ("h2d", True, "other"),
        "pinned_h2d_waits_for_other_thread": ("h2d", True, "thread"),
    }
    out: dict[str, Any] = {}
    for name, (direction, pinned, where) in cases.items():
        trials = [_waits(t, plan, direction, pinned, where) for _ in range(3)]
        out[name] = sum(tr["waited"] for tr in trials) >= 2
        out[f"{name}_call_s"] = [tr["call_s"] for tr in trials]
    return out


def serialization(t: Target, plan: Plan) -> dict[str, Any]:
    """H2D in one thread and D2H in another, each on its own stream (separate copy engines with CC
    off): ``ratio`` = time together / (time of each alone, summed). ~0.5: they overlap; ~1: serialised."""
    n = MiB
    h_src, d_dst = t.host(n, True), t.device(n)
    d_src, h_dst = t.device(n), t.host(n, True)
    s1, s2 = t.api.Stream(), t.api.Stream()

    def run(dst: Any, src: Any, stream: Any) -> None:
        with t.on(stream):
            for _ in range(plan.serial_copies):
                t.copy(dst, src)
                stream.synchronize()

    def h2d() -> None:
        run(d_dst, h_src, s1)

    def d2h() -> None:
        run(h_dst, d_src, s2)

    def both() -> None:
        th = threading.Thread(target=d2h)
        th.start()
        h2d()
        th.join()

    ratios = []
    for _ in range(3):
        a = min(_timed(h2d, 2, warmup=1))
        b = min(_timed(d2h, 2, warmup=1))
        ab = min(_timed(both, 2, warmup=1))
        ratios.append(ab / (a + b))
    return {"ratio": ratios, "serialized": statistics.median(ratios) > 0.75}


def _per_op(fn: Callable[[], Any], n: int, reps: int, sync: Callable[[], None]) -> list[float]:
    def burst() -> None:
        for _ in range(n):
            fn()

    out = []
    burst()
    sync()
    for _ in range(reps):
        t0 = perf()
        burst()
        out.append((perf() - t0) / n)
        sync()
    return out


def launches(t: Target, plan: Plan) -> dict[str, list[float]]:
    """Host seconds per eager launch, per graph replay, and per small (64 B) D2D copy."""
    replay = t.make_graph(plan.graph_nodes)
    t.synchronize()
    a, b = t.device(64), t.device(64)
    return {
        "launch_s": _per_op(t.tiny_kernel, plan.launch_n, plan.launch_reps, t.synchronize),
        "graph_replay_s": _per_op(replay, plan.graph_n, plan.launch_reps, t.synchronize),
        "d2d_small_s": _per_op(lambda: t.copy(a, b), plan.launch_n, plan.launch_reps, t.synchronize),
    }


def events(t: Target, plan: Plan) -> dict[str, Any]:
    """``elapsed_time`` around the same queued work, many times: readings far from the consensus (the
    median) or negative are invalid. A corrupted reading within 5% of the truth is not detected."""
    readings = []
    for _ in range(plan.event_pairs):
        a, b = t.api.Event(enable_timing=True), t.api.Event(enable_timing=True)
        a.record()
        t.busy(plan.event_busy_s)
        b.record()
        b.synchronize()
        readings.append(float(a.elapsed_time(b)))
    ref = statistics.median(readings)
    tol = max(0.05 * abs(ref), 0.01)
    invalid = [r for r in readings if r < 0 or abs(r - ref) > tol]
    return {"readings_ms": readings, "reference_ms": ref, "invalid": len(invalid),
            "negative": sum(r < 0 for r in readings), "n": len(readings),
            "invalid_rel_errors": [(r - ref) / ref for r in invalid if ref]}


STEPS: tuple[tuple[str, Callable[[Target, Plan], Any]], ...] = (
    ("copies", copies),
    ("blocking", blocking),
    ("serialization", serialization),
    ("launches", launches),
    ("events", events),
    ("host_register", lambda t, plan: t.host_register()),
    ("multicast", lambda t, plan: t.multicast()),
)


def measure(t: Target, plan: Plan, progress: Callable[[Iterable[Any], str], Iterable[Any]] | None = None
            ) -> dict[str, Any]:
    """Run every step on ``t``; ``progress(items, desc)`` wraps the step loop (tqdm in the CLI)."""
    steps: Iterable[Any] = STEPS if progress is None else progress(STEPS, f"calibrate ({t.kind})")
    out: dict[str, Any] = {}
    for name, fn in steps:
        out[name] = fn(t, plan)
    return out
