"""CC's copy semantics beyond costs: each profile switch changes what a program can observe.

Real SimDevice streams and threads (the simulated device) and the real emulator charging logic with
the CPU stand-in backend (meta tensors play CUDA tensors; a SimDevice stream plays the CUDA stream,
because this machine has no GPU). Order is asserted, never durations.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import torch

from cc_runtime.calibrate import QUICK, SimTarget
from cc_runtime.calibrate import measurements as m
from cc_runtime.emulator import SimDevice, load_profile
from cc_runtime.emulator import cuda as ec

H100 = load_profile("h100")


def _with(**switches: object):
    return dataclasses.replace(H100, name="test", **switches)


def _blocker(sim: SimDevice, stream, log: list[str], delay: float = 0.1) -> None:
    release = threading.Event()
    sim.launch(lambda: (release.wait(5), log.append("queued op finished")), 0.0, stream)
    threading.Timer(delay, release.set).start()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("blocking", [True, False])
def test_pageable_h2d_switch_decides_whether_the_copy_waits(blocking: bool) -> None:
    with SimDevice(_with(pageable_h2d_blocking=blocking)) as sim:
        s = sim.Stream()
        log: list[str] = []
        _blocker(sim, s, log)
        host = sim.mark_pageable(torch.arange(4.0))
        dev = sim.zeros(4)
        sim.copy_(dev, host, s, non_blocking=True)
        log.append("copy returned")
        host.zero_()  # pageable data is staged at the call: later writes do not reach the device
        s.synchronize()
        assert log == (["queued op finished", "copy returned"] if blocking else
                       ["copy returned", "queued op finished"])
        assert dev.tolist() == [0.0, 1.0, 2.0, 3.0]
        assert sim.stats["async_pageable_h2d"] == (0 if blocking else 1)


@pytest.mark.timeout(10)
def test_pinned_h2d_waits_for_its_own_stream_only() -> None:
    """vLLM PR 52226: an H2D on an idle side stream pays only its own cost under CC."""
    with SimDevice("h100") as sim:
        busy, side = sim.Stream(), sim.Stream()
        log: list[str] = []
        _blocker(sim, busy, log)
        sim.copy_(sim.zeros(4), torch.ones(4), side)
        log.append("side copy returned")
        busy.synchronize()
        assert log == ["side copy returned", "queued op finished"]


def _slow_h2d_profile(serialize: bool):
    # 1 MiB at 5 MB/s: ~0.2 s, long enough for another thread's copy to arrive in the middle of it.
    return _with(h2d_bandwidth_Bps=5e6, copies_serialize_across_streams=serialize)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("serialize", [True, False])
def test_copies_serialise_across_streams_and_threads(serialize: bool) -> None:
    with SimDevice(_slow_h2d_profile(serialize)) as sim:
        a_done = threading.Event()
        started = threading.Event()
        big_dst, big_src = sim.zeros(1 << 18), torch.ones(1 << 18)

        def big() -> None:
            s = sim.Stream()
            started.set()
            sim.copy_(big_dst, big_src, s)
            a_done.set()

        th = threading.Thread(target=big)
        th.start()
        started.wait(5)
        time.sleep(0.03)
        t0 = time.perf_counter()
        sim.to_host(sim.zeros(4), sim.Stream())  # a small D2H on another stream, from this thread
        # Serialised, it waits out the ~0.17 s the big copy still has to run (the channel is a timeline
        # of slots, so its own thread may report done a moment after the small copy returns).
        waited = time.perf_counter() - t0 > 0.1
        th.join()
        assert a_done.is_set()
        assert waited is serialize
        assert (sim.stats["serialized_copies"] > 0) is serialize


@pytest.mark.parametrize("fails", [True, False])
def test_host_register_and_multicast_refusals(fails: bool) -> None:
    with SimDevice(_with(host_register_fails=fails, multicast_unsupported=fails)) as sim:
        assert sim.host_register(torch.empty(8)) == (801 if fails else 0)
        assert sim.multicast_create() == (801 if fails else 0)
    with SimDevice(None) as off:  # CC off: nothing is refused
        assert off.host_register(torch.empty(8)) == 0 and off.multicast_create() == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("switch", "step", "key"), [
    ("pageable_h2d_blocking", m.blocking, "pageable_h2d_waits_for_its_stream"),
    ("copies_serialize_across_streams", m.serialization, "serialized"),
])
@pytest.mark.parametrize("value", [True, False])
def test_calibrate_observes_each_switch(switch: str, step, key: str, value: bool) -> None:
    """calibrate's own measurements (host timestamps vs queued work) see what the device does."""
    t = SimTarget(_with(**{switch: value}))
    try:
        got = step(t, QUICK)
    finally:
        t.close()
    assert got[key] is value
    if step is m.blocking:  # pinned copies wait for their stream whatever the pageable reading
        assert got["pinned_h2d_waits_for_its_stream"] and got["pinned_d2h_waits_for_its_stream"]
        assert not got["pinned_h2d_waits_for_other_stream"] and not got["pinned_h2d_waits_for_other_thread"]


# -- the GPU emulator's charging logic (stand-in backend) ------------------------------------------

@pytest.fixture(autouse=True)
def _clean():
    yield
    ec.disable()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("blocking", [True, False])
def test_emulator_pageable_h2d_switch(sim, blocking: bool) -> None:
    s = sim.Stream()
    log: list[str] = []
    with ec.emulate(_with(pageable_h2d_blocking=blocking), backend=ec.StandInBackend(s)) as em:
        _blocker(sim, s, log)
        torch.ones(64).to("meta", non_blocking=True)  # a CPU tensor from torch.ones is pageable
        log.append("copy returned")
        s.synchronize()
        assert log == (["queued op finished", "copy returned"] if blocking else
                       ["copy returned", "queued op finished"])
        assert em.stats["pageable_h2d"] == 1 and em.stats["async_pageable_h2d"] == (0 if blocking else 1)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("serialize", [True, False])
def test_emulator_serialises_copies_across_threads(sim, serialize: bool) -> None:
    em = ec.Emulator(_with(copies_serialize_across_streams=serialize), ec.StandInBackend(sim.Stream()))
    em.active = True
    gate, inside = threading.Event(), threading.Event()
    log: list[str] = []
    meta = torch.device("meta")

    def first_copy() -> None:
        inside.set()
        gate.wait(5)  # the real copy, still running
        log.append("first copy done")

    th = threading.Thread(target=lambda: em.copy("h2d", 64, meta, first_copy))
    th.start()
    inside.wait(5)
    threading.Timer(0.1, gate.set).start()
    em.copy("d2h", 64, meta, lambda: log.append("second copy done"))
    th.join()
    assert log == (["first copy done", "second copy done"] if serialize else
                   ["second copy done", "first copy done"])
    assert (em.stats["serialized_copies"] == 1) is serialize
