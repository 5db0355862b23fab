"""The simulated device's charges, waits and inline launches (what the readback worker's CPU figures rest on).

Timing is used only to make a thread wait; what is asserted is accounting and order, not speed.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from cc_runtime.emulator import SimDevice, SimDeviceError, clock

pytestmark = pytest.mark.timeout(30)


def _in_thread(fn):
    box: dict[str, object] = {}

    def run() -> None:
        box["value"] = fn()

    t = threading.Thread(target=run)
    t.start()
    t.join(20)
    return box["value"]


def test_charge_counts_the_paying_threads_cpu_not_wall_time_nor_other_threads():
    def pay() -> tuple[float, float, float]:
        c0, cpu0 = clock.charged_cpu_s(), time.thread_time()
        clock.charge_s(0.02)  # mostly asleep: 20 ms of wall time, far less CPU
        for _ in range(50):
            clock.charge_s(30e-6)  # spun: CPU
        clock.wait_s(0.005)  # a plain wait (device time) is not a charge
        return clock.charged_cpu_s() - c0, time.thread_time() - cpu0, c0

    mine0 = clock.charged_cpu_s()
    charged, cpu, _ = _in_thread(pay)
    assert 0 < charged <= cpu + 1e-4  # a part of the thread's CPU, never wall time (20+ ms)
    assert charged < 0.015
    assert clock.charged_cpu_s() == mine0  # another thread's charges are not this thread's


def test_charged_cpu_of_another_thread_is_readable_by_thread_object():
    done = threading.Event()
    go = threading.Event()

    def pay() -> None:
        for _ in range(20):
            clock.charge_s(50e-6)
        go.set()
        done.wait(10)

    t = threading.Thread(target=pay)
    t.start()
    go.wait(10)
    try:
        assert clock.charged_cpu_s(t) > 0
        assert clock.charged_cpu_s(t) == clock.charged_cpu_s(t.ident)
    finally:
        done.set()
        t.join(10)


def test_a_cc_copy_charges_the_copying_thread():
    with SimDevice("h100") as sim:
        src = sim.zeros((1024,), dtype=torch.int64)

        def copy() -> float:
            c0 = clock.charged_cpu_s()
            for _ in range(20):
                sim.copy_(torch.empty(1024, dtype=torch.int64), src)
            return clock.charged_cpu_s() - c0

        assert _in_thread(copy) > 0


def test_event_wait_times_out_and_leaves_no_stale_waiter():
    with SimDevice(None) as sim:
        s = sim.Stream()
        gate = threading.Event()
        sim.launch(lambda: gate.wait(10), 0.0, s)
        ev = sim.Event()
        ev.record(s)
        with pytest.raises(TimeoutError):
            ev.synchronize(timeout=0.05)
        assert s._waiters == []  # the timed-out waiter took itself out
        gate.set()
        ev.synchronize(timeout=10)
        assert ev.query()


def test_a_waiter_is_released_only_when_its_own_work_is_done():
    with SimDevice(None) as sim:
        s = sim.Stream()
        gates = [threading.Event() for _ in range(3)]
        for g in gates:
            sim.launch(lambda g=g: g.wait(10), 0.0, s)
        ev = sim.Event()
        ev.record(s)
        released = threading.Event()
        waiter = threading.Thread(target=lambda: (ev.synchronize(10), released.set()))
        waiter.start()
        for g in gates[:2]:
            g.set()
        s._wait_for(2, timeout=10)
        assert not released.wait(0.05)  # work #1 and #2 done: not yet
        gates[2].set()
        assert released.wait(10)
        waiter.join(10)


def test_inline_launch_on_an_idle_stream_runs_on_the_caller_in_order():
    with SimDevice("h100") as sim:
        s = sim.Stream()
        ran_on: list[str] = []
        sim.launch(lambda: ran_on.append(threading.current_thread().name), 0.0, s, inline_if_idle=True)
        assert ran_on == [threading.current_thread().name]  # idle: ran here, before launch returned
        assert s.query() and sim.stats["inline_launches"] == 1

        gate = threading.Event()
        order: list[str] = []
        sim.launch(lambda: (gate.wait(10), order.append("first")), 0.0, s)
        sim.launch(lambda: order.append("second"), 0.0, s, inline_if_idle=True)  # busy: queued behind
        assert order == []
        gate.set()
        s.synchronize(10)
        assert order == ["first", "second"]
        assert sim.stats["inline_launches"] == 1


def test_inline_launch_failure_is_the_streams_sticky_error_not_an_exception_at_launch():
    with SimDevice("h100") as sim:
        s = sim.Stream()

        def boom() -> None:
            raise ValueError("pack failed")

        sim.launch(boom, 0.0, s, inline_if_idle=True)  # does not raise here, as a real launch would not
        later: list[int] = []
        sim.launch(lambda: later.append(1), 0.0, s, inline_if_idle=True)
        with pytest.raises(SimDeviceError, match="pack failed") as info:
            s.synchronize(10)
        assert isinstance(info.value.__cause__, ValueError)
        assert later == []  # skipped after the failure, as CUDA's sticky error skips later work


def test_a_long_wait_blocks_for_the_bulk_and_spins_only_at_the_end():
    # A simulated kernel of 10 ms must not keep a core busy for 10 ms (two cores run this whole suite):
    # the thread sleeps until shortly before the deadline and spins only for the last stretch.
    def wait() -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(5):
            clock.wait_s(0.01)
        return time.perf_counter() - w0, time.thread_time() - c0

    wall, cpu = _in_thread(wait)
    assert wall >= 0.05
    assert cpu < 0.3 * wall, (wall, cpu)
