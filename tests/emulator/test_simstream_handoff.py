"""The simulated device hands work to a stream thread only when there is work to run or to wait behind:
an empty kernel, a bare event or an empty graph on an idle stream completes at once, and a non_blocking
D2D on an idle stream runs on the caller, in stream order. Each hand-off cost the issuing thread a
wake-up and a GIL round trip that calibrate read as part of CC's extras on a loaded machine."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cc_runtime.emulator import SimDevice, SimDeviceError  # noqa: E402


def test_empty_work_on_an_idle_stream_completes_without_the_stream_thread() -> None:
    with SimDevice("h100") as sim:
        s = sim.default_stream
        for _ in range(50):
            sim.launch(None, 0.0)
            assert s.query()  # done already: no thread had to run it
        g = sim.Graph()
        with sim.capture(g):
            sim.launch(None, 0.0)
        for _ in range(20):
            g.replay()
            assert s.query()
        ev = sim.Event()
        ev.record()
        assert ev.query() and sim.stats["launches"] == 50


def test_work_behind_a_busy_stream_is_still_queued_in_order() -> None:
    with SimDevice(None) as sim:
        s = sim.default_stream
        order: list[str] = []
        sim.launch(lambda: order.append("kernel"), 0.05)
        sim.launch(None, 0.0)
        ev = sim.Event()
        ev.record()
        assert not s.query() and not ev.query()
        a, b = sim.zeros(4), sim.mark_device(torch.arange(4.0))
        sim.copy_(a, b, non_blocking=True)  # behind the kernel: queued, not inline
        assert a.tolist() == [0.0] * 4
        sim.synchronize()
        assert order == ["kernel"] and a.tolist() == [0.0, 1.0, 2.0, 3.0] and sim.stats["inline_d2d"] == 0


def test_a_d2d_on_an_idle_stream_copies_inline_and_keeps_sticky_errors() -> None:
    with SimDevice("h100") as sim:
        a, b = sim.zeros(4), sim.mark_device(torch.arange(4.0))
        sim.copy_(a, b, non_blocking=True)
        assert a.tolist() == [0.0, 1.0, 2.0, 3.0] and sim.stats["inline_d2d"] == 1
        sim.launch(lambda: 1 / 0, 0.0)
        sim.default_stream._wait_for(sim.default_stream._submitted)
        c = sim.zeros(4)
        sim.copy_(c, b, non_blocking=True)  # after a failure: skipped, as CUDA's sticky error skips work
        with pytest.raises(SimDeviceError):
            sim.synchronize()
        assert c.tolist() == [0.0] * 4
