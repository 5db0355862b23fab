"""calibrate's measurements: host wall-clock timings and host-vs-device ordering, nothing from the emulator.

Every measurement is taken from the host with ``time.perf_counter`` (CUDA events may lie under CC:
that is one of the things measured) and ordering is read from events recorded *before* the call:
"the copy waited for queued work" means an event recorded after that work was already complete when
the copy returned. Raw repetitions are kept so every derived value can carry its spread.
"""

from __future__ import annotations

import functools
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


# Launch, replay and D2D timings are bursts of 20 ops (about 0.5 ms under CC), then a sync, many times:
# a thread that runs a few ms without blocking uses up its scheduler share on a loaded machine and is
# preempted for other processes' slices, so 100-op bursts read a simulated 18 us D2D extra as 60-150 us
# (the median burst was a preempted one); short bursts that end in a wait are not.
QUICK = Plan(sizes=(64, 64 * KiB, MiB, 16 * MiB, 64 * MiB), reps=7, big_reps=5, launch_n=20, launch_reps=21,
             graph_nodes=10, graph_n=20, event_pairs=80, event_busy_s=0.004, busy_s=0.03)
FULL = Plan(sizes=tuple(64 * 4 ** i for i in range(11)), reps=21, big_reps=7, launch_n=20, launch_reps=41,
            graph_nodes=10, graph_n=20, event_pairs=300, event_busy_s=0.004, busy_s=0.05)

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
    """Seconds per copy (issue + wait for it), by kind and size, on an idle stream of its own.

    The wait is ``stream.synchronize()``; what that call costs on an idle stream (the harness, not the
    copy) is measured first and taken off every repetition, so a profile measured here and the same
    profile measured back under emulation do not each carry it once more."""
    out: dict[str, dict[int, list[float]]] = {}
    stream = t.api.Stream()
    idle = statistics.median(_timed(stream.synchronize, 4 * plan.reps))
    for direction, pinned in COPY_KINDS:
        per: dict[int, list[float]] = {}
        for n in plan.sizes:
            host, dev = t.host(n, pinned), t.device(n)
            dst, src = (dev, host) if direction == "h2d" else (host, dev)

            def one(dst: Any = dst, src: Any = src) -> None:
                t.copy(dst, src)
                stream.synchronize()

            with t.on(stream):
                per[n] = [max(0.0, x - idle) for x in _timed(one, plan.big_reps if n >= 16 * MiB else plan.reps)]
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
    """Does a small copy wait for another thread's copy on another stream?

    Thread A makes a large H2D copy (alone it takes ``T``); a quarter of ``T`` after A issued it,
    this thread makes a 64 B D2H copy on its own stream (a different copy engine with CC off) and
    times it. ``ratio`` = that time / ``T``: near 0 when copies overlap, near 0.75 when the small copy
    had to wait for the large one (copies serialised across streams)."""
    n = 64 * MiB
    h_src, d_dst = t.host(n, True), t.device(n)
    d_small, h_small = t.device(64), t.host(64, True)
    s1, s2 = t.api.Stream(), t.api.Stream()

    def big(started: threading.Event | None = None) -> None:
        with t.on(s1):
            if started is not None:
                started.set()
            t.copy(d_dst, h_src)
            s1.synchronize()

    def small() -> float:
        t0 = perf()
        with t.on(s2):
            t.copy(h_small, d_small)
            s2.synchronize()
        return perf() - t0

    ratios = []
    for _ in range(3):
        total = min(_timed(big, 2, warmup=1))
        started = threading.Event()
        th = threading.Thread(target=big, args=(started,))
        th.start()
        started.wait()
        time.sleep(total / 4)
        ratios.append(small() / total)
        th.join()
    return {"ratio": ratios, "serialized": statistics.median(ratios) > 0.25}


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


def paired_launches(off: Target, cc: Target, plan: Plan) -> dict[str, list[float]]:
    """Per repetition, host seconds per op on ``cc`` minus the same on ``off``, the two bursts back to back
    (their order alternating): the extras of a CC profile over a CC-off device measured in the same
    moments. Measured minutes apart instead, a load change between the two runs read as part of the extra
    (a simulated 18 us D2D extra came back 17-28 us)."""
    ops: list[dict[str, Callable[[], Any]]] = []
    for t in (off, cc):
        replay = t.make_graph(plan.graph_nodes)
        t.synchronize()
        a, b = t.device(64), t.device(64)
        ops.append({"launch_s": t.tiny_kernel, "graph_replay_s": replay,
                    "d2d_small_s": functools.partial(t.copy, a, b)})
    n = {"launch_s": plan.launch_n, "graph_replay_s": plan.graph_n, "d2d_small_s": plan.launch_n}
    out: dict[str, list[float]] = {}
    for key in ("launch_s", "graph_replay_s", "d2d_small_s"):
        diffs = []
        for rep in range(plan.launch_reps + 1):  # the first pair warms both up and is not kept
            per: dict[int, float] = {}
            for i in ((0, 1) if rep % 2 else (1, 0)):
                t, fn = (off, cc)[i], ops[i][key]
                t0 = perf()
                for _ in range(n[key]):
                    fn()
                per[i] = (perf() - t0) / n[key]
                t.synchronize()
            if rep:
                diffs.append(per[1] - per[0])
        out[key] = diffs
    return out


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


def measure(t: Target, plan: Plan, progress: Callable[[Iterable[Any], str], Iterable[Any]] | None = None,
            label: str | None = None) -> dict[str, Any]:
    """Run every step on ``t``; ``progress(items, desc)`` wraps the step loop (tqdm in the CLI)."""
    steps: Iterable[Any] = STEPS if progress is None else progress(STEPS, f"calibrate ({label or t.kind})")
    out: dict[str, Any] = {}
    for name, fn in steps:
        out[name] = fn(t, plan)
    return out
