"""ReadbackWorker on the emulator's simulated device: order, errors, backpressure, shutdown, binding."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from cc_runtime.readback import CopyDone, ReadbackError, ReadbackShutdownError, ReadbackWorker
from cc_runtime.readback.backend import DeviceModuleBackend, SimDeviceBackend, backend_for

pytestmark = pytest.mark.timeout(60)


def _write_later(sim, dst, value, gate=None):
    def kernel():
        if gate is not None:
            gate.wait()
        dst.fill_(value)

    sim.launch(kernel, 0.0)


def test_backend_for_picks_the_simulated_device(sim_cc):
    assert isinstance(backend_for(sim_cc), SimDeviceBackend)
    with pytest.raises(ValueError, match="CPU"):
        backend_for("cpu")


def test_submit_does_not_wait_for_the_producer_and_reads_what_it_wrote(sim_cc, gate):
    src = sim_cc.zeros((4,), dtype=torch.int64)
    _write_later(sim_cc, src, 7, gate)  # the "forward pass" is stuck behind the gate
    with ReadbackWorker(sim_cc) as worker:
        done = worker.submit_coalesced([src])  # must return although the copy cannot start
        assert not done.query()
        gate.open()
        done.synchronize()
        assert done.query()
        (host,) = done.result
        assert host.tolist() == [7, 7, 7, 7]
        assert not sim_cc.is_device(host)


def test_completion_follows_submission_order(sim_cc, gate):
    ran: list[int] = []
    with ReadbackWorker(sim_cc) as worker:
        first_src = sim_cc.zeros((1,), dtype=torch.int64)
        _write_later(sim_cc, first_src, 1, gate)
        dones = [worker.submit(lambda i=i: ran.append(i) or i) for i in range(20)]
        gate.open()
        assert [d.result for d in dones] == list(range(20))
    assert ran == list(range(20))


def test_failed_copy_reraises_with_cause_and_later_copies_still_complete(sim_cc):
    def broken():
        raise ValueError("decrypt failed")

    with ReadbackWorker(sim_cc) as worker:
        bad = worker.submit(broken)
        good = worker.submit(lambda: 42)
        with pytest.raises(ReadbackError, match="decrypt failed") as info:
            bad.synchronize()
        assert isinstance(info.value.__cause__, ValueError)
        assert bad.query() and good.result == 42
        with pytest.raises(ReadbackError):  # and again: the error is sticky for this readback
            bad.synchronize()
    assert worker.failed == 1 and worker.completed == 1


def test_failing_device_work_before_the_copy_fails_the_readback(sim_cc):
    def kernel():
        raise RuntimeError("illegal address")

    sim_cc.launch(kernel, 0.0)
    with ReadbackWorker(sim_cc) as worker:
        done = worker.submit(lambda: "never valid")
        with pytest.raises(ReadbackError) as info:
            done.synchronize()
        assert "illegal address" in repr(info.value.__cause__) + repr(info.value.__cause__.__cause__)


def test_bounded_queue_applies_backpressure(sim_cc, gate):
    worker = ReadbackWorker(sim_cc, max_pending=2)
    blocker = worker.submit(gate.wait)  # occupies the worker
    submitted: list[CopyDone] = []

    def producer():
        for i in range(6):
            submitted.append(worker.submit(lambda i=i: i))

    t = threading.Thread(target=producer)
    t.start()
    t.join(0.5)
    assert t.is_alive(), "submit must block while max_pending copies are queued"
    assert len(submitted) <= 2
    gate.open()
    t.join(10)
    assert not t.is_alive()
    blocker.synchronize()
    assert [d.result for d in submitted] == list(range(6))
    assert worker.shutdown()


def test_shutdown_completes_pending_copies(sim_cc, gate):
    worker = ReadbackWorker(sim_cc)
    srcs = [sim_cc.zeros((3,), dtype=torch.float32) for _ in range(5)]
    for i, s in enumerate(srcs):
        _write_later(sim_cc, s, float(i), gate if i == 0 else None)
    dones = [worker.submit_coalesced([s]) for s in srcs]
    threading.Timer(0.2, gate.open).start()
    assert worker.shutdown(timeout=30) is True
    assert [d.result[0].tolist() for d in dones] == [[float(i)] * 3 for i in range(5)]


def test_shutdown_timeout_fails_pending_copies_instead_of_hanging(sim_cc, gate):
    worker = ReadbackWorker(sim_cc, shutdown_timeout_s=0.3)
    stuck = worker.submit(gate.wait)
    queued = [worker.submit(lambda: 1) for _ in range(3)]
    assert worker.shutdown() is False
    for done in [stuck, *queued]:
        assert done.query()
        with pytest.raises(ReadbackShutdownError, match="shutdown"):
            done.synchronize()
    gate.open()


def test_submit_after_shutdown_runs_inline_and_is_not_lost(sim_cc):
    worker = ReadbackWorker(sim_cc)
    worker.shutdown()
    src = sim_cc.zeros((2,), dtype=torch.int32)
    _write_later(sim_cc, src, 3)
    done = worker.submit_coalesced([src])
    assert done.query()
    assert done.result[0].tolist() == [3, 3]
    assert worker.shutdown() is True  # idempotent


def test_copies_run_on_a_private_stream(sim_cc):
    with ReadbackWorker(sim_cc) as worker:
        seen = worker.submit(sim_cc.current_stream).result
        assert seen is worker.stream
        assert worker.stream is not sim_cc.current_stream()


def test_done_object_stands_in_for_a_cuda_event(sim_cc):
    with ReadbackWorker(sim_cc) as worker:
        done = worker.submit(lambda: None)
        done.record()  # no-op, as upstream code calls copy_done.record()
        done.record(sim_cc.current_stream())
        done.wait()
        assert done.query() and done.error is None


class _RecordingModule:
    """A CPU stand-in for ``torch.cuda`` (no GPU here) that records which device each thread selects."""

    def __init__(self, sim, device: int) -> None:
        self.sim = sim
        self.device = device
        self.selected: dict[str, int] = {}
        self.stream_devices: list[int | None] = []

    def current_device(self) -> int:
        return self.device

    def set_device(self, device: int) -> None:
        self.selected[threading.current_thread().name] = device

    def Stream(self, device=None):  # noqa: N802
        self.stream_devices.append(device)
        return self.sim.Stream()

    def Event(self):  # noqa: N802
        return self.sim.Event()

    def current_stream(self):
        return self.sim.current_stream()

    def stream(self, s):
        return self.sim.stream(s)


def test_worker_binds_to_the_device_current_at_creation(sim_off):
    module = _RecordingModule(sim_off, device=3)
    backend = DeviceModuleBackend(module)
    worker = ReadbackWorker(backend, name="bound-worker")
    module.device = 0  # the caller moves on to another device; the worker must not follow
    assert worker.submit(lambda: 1).result == 1
    worker.shutdown()
    assert worker.device == 3
    assert module.selected == {"bound-worker": 3}


def test_a_worker_for_an_explicit_device_index_binds_to_it_not_to_the_current_one(sim_off):
    """``ReadbackWorker("cuda:1")`` while cuda:0 is current: stream and worker thread on device 1."""
    module = _RecordingModule(sim_off, device=0)
    worker = ReadbackWorker(DeviceModuleBackend(module, index=1), name="indexed-worker")
    assert worker.submit(lambda: 1).result == 1
    worker.shutdown()
    assert worker.device == 1
    assert module.selected == {"indexed-worker": 1} and module.stream_devices == [1]


def test_shutdown_timeout_comes_from_settings(monkeypatch, sim_off):
    monkeypatch.setenv("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "0.75")
    worker = ReadbackWorker(sim_off)
    assert worker.shutdown_timeout_s == 0.75
    worker.shutdown()
    monkeypatch.setenv("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "-1")
    from cc_runtime.settings import SettingsError

    with pytest.raises(SettingsError, match="CC_RUNTIME_SHUTDOWN_TIMEOUT_S"):
        ReadbackWorker(sim_off)


_EXIT_SCRIPT = textwrap.dedent("""
    import logging, sys, threading, torch
    logging.basicConfig(level=logging.ERROR)
    from cc_runtime.emulator import SimDevice
    from cc_runtime.readback import ReadbackWorker
    sim = SimDevice("h100")
    worker = ReadbackWorker(sim)
    out = open(sys.argv[1], "w")
    stuck = threading.Event()
    for i in range(5):
        src = sim.zeros((1,), dtype=torch.int64)
        sim.launch(lambda s=src, i=i: s.fill_(i), 0.05)
        worker.submit(lambda s=src: out.write(f"{int(sim.to_host(s)[0])}\\n") and out.flush())
    if sys.argv[2] == "stuck":
        worker.submit(stuck.wait)
    print("exiting", flush=True)
    # no shutdown: the at-exit hook must drain (or, when stuck, give up after the bounded wait)
""")


@pytest.mark.parametrize("mode", ["drain", "stuck"])
def test_at_exit_shutdown_drains_pending_copies_with_a_bounded_wait(tmp_path, mode):
    out = tmp_path / "out.txt"
    script = tmp_path / "exit_script.py"
    script.write_text(_EXIT_SCRIPT)
    env = {**os.environ, "CC_RUNTIME_SHUTDOWN_TIMEOUT_S": "3"}
    proc = subprocess.run([sys.executable, str(script), str(out), mode], env=env, capture_output=True,
                          text=True, timeout=45)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().split() == ["0", "1", "2", "3", "4"]
    if mode == "stuck":
        assert "did not finish within 3" in proc.stderr or "timed out" in proc.stderr


def test_a_worker_that_cannot_select_its_device_fails_copies_with_the_cause(sim_off):
    module = _RecordingModule(sim_off, device=1)

    def refuse(device: int) -> None:
        raise RuntimeError("CUDA error: invalid device ordinal")

    module.set_device = refuse  # type: ignore[method-assign]
    worker = ReadbackWorker(DeviceModuleBackend(module))
    done = worker.submit(lambda: 1)
    with pytest.raises(ReadbackError, match="invalid device ordinal"):
        done.synchronize(timeout=10)
    assert worker.shutdown() is True


def test_sequence_numbers_follow_queue_order_with_producers_blocked_by_backpressure(sim_off, gate):
    """Several producers held by a full queue: the copy numbered first must run first."""
    worker = ReadbackWorker(sim_off, max_pending=1)
    worker.submit(gate.wait)  # occupies the worker
    worker.submit(lambda: None)  # fills the queue
    ran: list[int] = []
    dones: dict[int, CopyDone] = {}

    def producer(k: int) -> None:
        dones[k] = worker.submit(lambda: ran.append(k))

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    gate.open()
    for t in threads:
        t.join(10)
    assert worker.shutdown(timeout=10)
    assert sorted(ran) == list(range(6))
    assert [dones[k].seq for k in ran] == sorted(d.seq for d in dones.values())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_fails_the_parents_pending_copies_instead_of_waiting(sim_cc, gate):
    """In a forked child the worker thread does not exist: pending copies fail at once, with the reason."""
    worker = ReadbackWorker(sim_cc)
    stuck = worker.submit(gate.wait)
    pid = os.fork()
    if pid == 0:  # child: report through the exit code only
        import signal

        signal.alarm(10)  # a hang here must not outlive the test
        code = 3
        try:
            if stuck.query() and worker.closed:
                try:
                    stuck.synchronize(timeout=5)
                except ReadbackShutdownError as exc:
                    code = 0 if "forked" in str(exc) else 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    gate.open()
    assert os.waitstatus_to_exitcode(status) == 0
    assert stuck.result is None and not worker.closed  # the parent is untouched
    worker.shutdown()


def test_a_copy_that_submits_another_on_a_full_queue_does_not_wait_for_itself(sim_off, gate):
    worker = ReadbackWorker(sim_off, max_pending=1)
    inner: list[CopyDone] = []
    queue_full = threading.Event()

    def outer_copy() -> str:
        assert queue_full.wait(10)
        inner.append(worker.submit(lambda: "inner"))
        return "outer"

    outer = worker.submit(outer_copy)
    worker.submit(gate.wait)  # fills the queue while the outer copy runs
    queue_full.set()
    assert outer.synchronize(timeout=10) is None and outer.result == "outer"
    gate.open()
    assert inner[0].result == "inner"
    assert worker.shutdown(timeout=10)


def test_waiting_for_a_later_copy_on_the_worker_thread_raises_instead_of_hanging(sim_off):
    worker = ReadbackWorker(sim_off)
    later: list[CopyDone] = []

    def wait_for_later() -> None:
        later.append(worker.submit(lambda: 1))
        later[0].synchronize()

    first = worker.submit(wait_for_later)
    with pytest.raises(ReadbackError, match="wait forever") as info:
        first.synchronize(timeout=10)
    assert isinstance(info.value.__cause__, ReadbackError)
    assert later[0].result == 1  # the later copy still runs, in its turn
    assert worker.shutdown(timeout=10)


def test_any_object_implementing_the_backend_protocol_is_used_as_is(sim_off):
    """The worker documents ``device`` may be a DeviceBackend: not only the two built-in classes."""

    class Delegating:  # implements the protocol without subclassing either built-in backend
        def __init__(self, inner: SimDeviceBackend) -> None:
            self.inner = inner

        def __getattr__(self, name: str):
            return getattr(self.inner, name)

    backend = Delegating(SimDeviceBackend(sim_off))
    assert backend_for(backend) is backend
    with ReadbackWorker(backend) as worker:
        assert worker.backend is backend and worker.submit(lambda: 7).result == 7


class _BlockingCheckModule(_RecordingModule):
    """Records every event's ``blocking`` flag and refuses ``Stream.synchronize`` (it would spin on CUDA).

    Stand-in for ``torch.cuda`` (no GPU here): torch.cuda.Event() without blocking=True, and
    torch.cuda.Stream.synchronize() in a context without cudaDeviceScheduleBlockingSync, busy-wait a
    CPU core; the worker waits for a whole forward pass every step, so it must only use blocking events.
    """

    def __init__(self, sim, device: int) -> None:
        super().__init__(sim, device)
        self.event_flags: list[bool] = []

    def Stream(self, device=None):  # noqa: N802
        stream = super().Stream(device)

        def spin_sync(*_a, **_k):
            raise AssertionError("Stream.synchronize() spins a CPU core on CUDA; wait on a blocking event")

        stream.synchronize = spin_sync
        return stream

    def Event(self, blocking=False, **_kw):  # noqa: N802
        self.event_flags.append(blocking)
        return self.sim.Event()


def test_worker_waits_for_the_device_only_on_blocking_events(sim_off):
    import torch

    module = _BlockingCheckModule(sim_off, device=0)
    worker = ReadbackWorker(DeviceModuleBackend(module), name="blocking-worker")
    src = sim_off.zeros((4,), dtype=torch.int64)
    sim_off.launch(lambda: src.fill_(7), 0.001)
    done = worker.submit(lambda: 7)
    assert done.result == 7
    worker.shutdown()
    assert module.event_flags and all(module.event_flags), module.event_flags


def test_every_consumer_waiting_on_one_copy_wakes_when_it_completes(sim_off, gate):
    # Completion is one lock released once; each waiter must pass it on, or only the first would
    # wake (the rest at their next liveness poll, 0.25 s later).
    with ReadbackWorker(sim_off) as worker:
        sim_off.launch(gate.wait)
        done = worker.submit(lambda: 7)
        woke: list[float] = []
        lock = threading.Lock()

        def consume() -> None:
            done.synchronize(10)
            with lock:
                woke.append(time.monotonic())

        threads = [threading.Thread(target=consume) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.02)  # let them block: each wait slice (0.25 s) then ends >= 0.23 s after the copy
        opened = time.monotonic()
        gate.event.set()
        for t in threads:
            t.join(10)
        assert len(woke) == 4 and done.result == 7
        assert max(woke) - opened < 0.15, "a waiter slept until its poll instead of waking with the copy"
