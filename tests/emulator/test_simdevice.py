"""The simulated device: in-order streams on real threads, CC copy semantics, events, errors."""

from __future__ import annotations

import threading

import pytest
import torch

from cc_runtime.emulator import SimDevice, SimDeviceError


@pytest.fixture(params=["h100", None], ids=["cc", "off"])
def sim(request):
    dev = SimDevice(request.param)
    yield dev
    dev.shutdown()


@pytest.mark.timeout(10)
def test_stream_runs_work_in_submission_order(sim) -> None:
    order: list[int] = []
    s = sim.Stream()
    for i in range(20):
        # Longer work first: only in-order execution keeps the list sorted.
        sim.launch(lambda i=i: order.append(i), 0.002 * (20 - i) / 20, s)
    s.synchronize()
    assert order == list(range(20))
    assert s.query()


@pytest.mark.timeout(10)
def test_cc_copy_waits_for_queued_work_even_non_blocking() -> None:
    with SimDevice("h100") as sim:
        s = sim.Stream()
        release = threading.Event()
        done: list[str] = []
        sim.launch(lambda: (release.wait(5), done.append("kernel")), 0.0, s)
        dev = sim.zeros(4)
        threading.Timer(0.05, release.set).start()
        sim.copy_(dev, torch.arange(4.0), s, non_blocking=True)
        done.append("copy returned")
        assert done == ["kernel", "copy returned"]
        assert dev.tolist() == [0.0, 1.0, 2.0, 3.0]  # the data is there when the call returns


@pytest.mark.timeout(10)
def test_cc_off_non_blocking_copy_returns_before_queued_work() -> None:
    with SimDevice(None) as sim:
        s = sim.Stream()
        release = threading.Event()
        sim.launch(lambda: release.wait(5), 0.0, s)
        host = torch.zeros(3)
        src = sim.to_device(torch.tensor([1.0, 2.0, 3.0]))
        sim.copy_(host, src, s, non_blocking=True)
        assert not s.query() and host.tolist() == [0.0, 0.0, 0.0]  # queued, not done: real overlap
        release.set()
        s.synchronize()
        assert host.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.timeout(10)
def test_error_in_launched_work_reaches_the_next_synchronize_with_cause(sim) -> None:
    s = sim.Stream()
    ran: list[str] = []

    def boom() -> None:
        raise ValueError("bad kernel")

    sim.launch(boom, 0.0, s, label="boom")
    sim.launch(lambda: ran.append("after"), 0.0, s)
    with pytest.raises(SimDeviceError, match="boom") as info:
        s.synchronize()
    assert isinstance(info.value.__cause__, ValueError)
    assert ran == []  # sticky error: later work on that stream was skipped, not run on bad state
    sim.launch(lambda: ran.append("again"), 0.0, s)
    s.synchronize()  # reported once, then the stream works again
    assert ran == ["again"]


@pytest.mark.timeout(10)
def test_error_reaches_event_synchronize_and_device_synchronize(sim) -> None:
    s = sim.Stream()
    sim.launch(lambda: 1 / 0, 0.0, s)
    ev = sim.Event()
    ev.record(s)
    with pytest.raises(SimDeviceError) as info:
        ev.synchronize()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    sim.launch(lambda: [][1], 0.0, s)
    with pytest.raises(SimDeviceError):
        sim.synchronize()


@pytest.mark.timeout(10)
def test_event_wait_orders_streams(sim) -> None:
    a, b = sim.Stream(), sim.Stream()
    order: list[str] = []
    release = threading.Event()
    sim.launch(lambda: (release.wait(5), order.append("a")), 0.0, a)
    ev = sim.Event()
    ev.record(a)
    assert not ev.query()
    ev.wait(b)
    sim.launch(lambda: order.append("b"), 0.0, b)
    release.set()
    b.synchronize()
    assert order == ["a", "b"] and ev.query()


@pytest.mark.timeout(10)
def test_current_stream_is_per_thread_and_context_managed(sim) -> None:
    s = sim.Stream()
    seen: list[object] = []
    with sim.stream(s):
        assert sim.current_stream() is s
        t = threading.Thread(target=lambda: seen.append(sim.current_stream()))
        t.start()
        t.join()
    assert sim.current_stream() is sim.default_stream and seen == [sim.default_stream]


@pytest.mark.timeout(10)
def test_elapsed_time_corrupted_only_under_cc() -> None:
    readings = {}
    for profile in ("h100", None):
        with SimDevice(profile, seed=3) as sim:
            start, end = sim.Event(enable_timing=True), sim.Event(enable_timing=True)
            start.record()
            sim.launch(None, 0.001)
            end.record()
            end.synchronize()
            readings[profile] = [start.elapsed_time(end) for _ in range(200)]
    assert len(set(readings[None])) == 1 and readings[None][0] > 0
    assert any(v < 0 for v in readings["h100"])
    with SimDevice("h100") as sim:
        with pytest.raises(RuntimeError, match="enable_timing"):
            sim.Event().elapsed_time(sim.Event())


def test_device_tensors_are_tracked_by_identity(sim) -> None:
    host = torch.ones(2)
    dev = sim.to_device(host)
    assert sim.is_device(dev) and not sim.is_device(host)
    assert sim.direction(dev, host) == "h2d" and sim.direction(host, dev) == "d2h"
    back = sim.to_host(dev)
    assert not sim.is_device(back) and back.tolist() == [1.0, 1.0]
    assert sim.stats["copies_h2d"] == 1 and sim.stats["bytes_d2h"] == 8


@pytest.mark.timeout(10)
def test_shutdown_finishes_queued_work_and_refuses_more() -> None:
    sim = SimDevice("h100")
    done: list[int] = []
    sim.launch(lambda: done.append(1), 0.01)
    sim.shutdown()
    assert done == [1]
    with pytest.raises(SimDeviceError, match="shut down"):
        sim.launch(None, 0.0)


@pytest.mark.timeout(10)
def test_graph_capture_records_and_replay_runs_nodes_in_order(sim) -> None:
    order: list[int] = []
    g = sim.Graph()
    with sim.capture(g):
        assert sim.is_current_stream_capturing()
        for i in range(5):
            sim.launch(lambda i=i: order.append(i), 0.0)
        with pytest.raises(SimDeviceError, match="capturing"):
            sim.copy_(sim.zeros(1), torch.ones(1))
    assert order == [] and len(g) == 5 and sim.stats["launches"] == 0  # capture is not charged
    g.replay()
    g.replay()
    sim.synchronize()
    assert order == [0, 1, 2, 3, 4] * 2 and sim.stats["graph_replays"] == 2


@pytest.mark.timeout(20)
def test_freed_device_tensor_callback_under_the_device_lock_does_not_deadlock():
    """A GC pass can free a device tensor while this thread is inside SimDevice (holding its lock);
    the weakref callback then takes the same lock. With a plain Lock that hung the readback tests."""
    sim = SimDevice(None)
    try:
        t = sim.empty(4)
        done = threading.Event()

        def free_while_locked():
            nonlocal t
            with sim._lock:
                del t  # runs the weakref callback on this thread, lock held
            done.set()

        worker = threading.Thread(target=free_while_locked, daemon=True)
        worker.start()
        worker.join(5)
        assert done.is_set(), "weakref callback deadlocked on the SimDevice lock"
        assert not sim._resident
    finally:
        sim.shutdown()
