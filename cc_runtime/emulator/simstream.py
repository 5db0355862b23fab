"""The simulated device's streams, events and graphs (see :mod:`.simdevice` for the device itself).

A stream is an in-order queue run by one background thread; events mark positions in it; a graph
replays captured launches as one queued item. Every number they produce is *simulated*.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .clock import charge_s, wait_s

if TYPE_CHECKING:
    from .simdevice import SimDevice

__all__ = ["SimDeviceError", "SimEvent", "SimGraph", "SimStream"]


class SimDeviceError(RuntimeError):
    """Work queued on a simulated stream failed; ``__cause__`` is the original exception."""


class _Item:
    __slots__ = ("fn", "duration_s", "label", "seq")

    def __init__(self, fn: Callable[[], Any] | None, duration_s: float, label: str, seq: int) -> None:
        self.fn, self.duration_s, self.label, self.seq = fn, duration_s, label, seq


class SimStream:
    """An in-order queue executed by one background thread (like a CUDA stream).

    A thread waiting for work #n (``synchronize``, an event's ``synchronize``) sleeps on a lock of its
    own that the stream thread releases when #n completes: it is woken once, when its work is done,
    not after every earlier item (as a shared condition variable would), because every wake-up costs
    the waiting thread CPU time that a real GPU's blocking sync would not.
    """

    def __init__(self, device: SimDevice, name: str, priority: int = 0) -> None:
        self.device = device
        self.name = name
        self.priority = priority
        self._cond = threading.Condition()
        self._queue: collections.deque[_Item] = collections.deque()
        self._submitted = 0
        self._completed = 0
        self._error: tuple[BaseException, str, int] | None = None  # (exception, label, seq)
        self._skipped = 0
        self._closed = False
        self._idle = False  # the stream thread sleeps for work: the next submission must wake it
        # Waiters for completion: a heap of [seq, tie-break, gate]; a gate is a held lock that the
        # stream thread releases once work #seq has completed.
        self._waiters: list[list[Any]] = []
        self._tie = itertools.count()
        self._thread = threading.Thread(target=self._run, name=f"{device.name}/{name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<SimStream {self.device.name}/{self.name} queued={self._submitted - self._completed}>"

    # -- submission ----------------------------------------------------------------------------
    def _submit(self, fn: Callable[[], Any] | None, duration_s: float = 0.0, label: str = "work") -> int:
        with self._cond:
            if self._closed:
                raise SimDeviceError(f"{self.device.name}: stream {self.name} is shut down")
            if fn is None and duration_s <= 0 and self._completed == self._submitted:
                # Nothing to run on an idle stream (an empty kernel, a bare event position): a GPU wakes
                # no host thread for it. Handing it to the stream thread cost the issuing thread a
                # wake-up and a GIL round trip per item, the simulated device's own overhead, which
                # calibrate read as part of CC's launch and graph-replay extras on a busy machine.
                self._submitted += 1
                self._completed = self._submitted
                if self._error is not None:
                    self._skipped += 1  # CUDA's sticky error: later work is skipped
                return self._submitted
            self._submitted += 1
            self._queue.append(_Item(fn, max(0.0, duration_s), label, self._submitted))
            if self._idle:
                self._cond.notify()  # only the stream thread waits on this condition
            return self._submitted

    def _run_if_idle(self, fn: Callable[[], Any], label: str = "work") -> int | None:
        """Run zero-duration work ``fn`` on the calling thread when nothing is queued or running here.

        Returns its sequence number, or None (stream busy or shut down: queue it instead). Order and
        errors are as if the stream thread had run it: the stream's lock is held throughout, so nothing
        can be queued ahead of it or run beside it, and a failure becomes the stream's sticky error,
        raised by the next ``synchronize``, not here."""
        with self._cond:
            if self._closed or self._completed < self._submitted:
                return None
            self._submitted += 1
            seq = self._submitted
            if self._error is not None:
                self._skipped += 1  # CUDA's sticky error: later work is skipped
            else:
                try:
                    fn()
                except BaseException as exc:  # noqa: BLE001 - handed to the next synchronize()
                    self._error = (exc, label, seq)
            self._completed = seq  # nobody can wait for seq yet: it was never visible before now
            return seq

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._idle = True
                    self._cond.wait()
                    self._idle = False
                if not self._queue:
                    return
                item = self._queue.popleft()
                failed = self._error is not None
                if failed:
                    self._skipped += 1  # under the lock: _raise_error resets it from another thread
            if not failed:
                try:
                    wait_s(item.duration_s)
                    if item.fn is not None:
                        item.fn()
                except BaseException as exc:  # noqa: BLE001 - handed to the next synchronize()
                    with self._cond:
                        self._error = (exc, item.label, item.seq)
            with self._cond:
                self._completed = item.seq
                waiters = self._waiters
                while waiters and waiters[0][0] <= item.seq:
                    heapq.heappop(waiters)[2].release()

    # -- completion ----------------------------------------------------------------------------
    def _wait_for(self, seq: int, timeout: float | None = None) -> None:
        if self._completed >= seq:
            return
        with self._cond:
            if self._completed >= seq:
                return
            gate = threading.Lock()
            gate.acquire()
            entry = [seq, next(self._tie), gate]
            heapq.heappush(self._waiters, entry)
        if gate.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return
        with self._cond:
            if self._completed >= seq:
                return  # completed as the wait expired: the stream thread released (or will) the gate
            self._waiters.remove(entry)
            heapq.heapify(self._waiters)
        raise TimeoutError(f"{self.device.name}: stream {self.name} did not reach work #{seq} "
                           f"within {timeout} s")

    def _raise_error(self, upto_seq: int | None = None) -> None:
        if self._error is None:
            return  # one attribute read: the common case takes no lock
        with self._cond:
            err = self._error
            if err is None or (upto_seq is not None and err[2] > upto_seq):
                return
            self._error = None
            skipped, self._skipped = self._skipped, 0
        exc, label, seq = err
        raise SimDeviceError(f"{self.device.name}: {label!r} (#{seq}) on stream {self.name} failed: "
                             f"{type(exc).__name__}: {exc}; {skipped} later item(s) skipped") from exc

    def synchronize(self, timeout: float | None = None) -> None:
        """Wait for everything queued so far; re-raise a failure of queued work."""
        self._wait_for(self._submitted, timeout)
        self._raise_error()

    def query(self) -> bool:
        return self._completed >= self._submitted  # two int reads: no lock needed under the GIL

    def wait_event(self, event: SimEvent) -> None:
        """Later work on this stream starts only after ``event`` has completed (host is not blocked)."""
        rec = event._recorded
        if rec is None or rec[0] is self:
            return  # an unrecorded event counts as complete; same-stream order is already given
        other, seq = rec
        self._submit(lambda: other._wait_for(seq), 0.0, f"wait for event on {other.name}")

    def wait_stream(self, other: SimStream) -> None:
        ev = self.device.Event()
        ev.record(other)
        self.wait_event(ev)

    def record_event(self, event: SimEvent | None = None) -> SimEvent:
        event = event or self.device.Event()
        event.record(self)
        return event

    def _close(self, timeout: float) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)


class SimEvent:
    """A marker in a stream (like ``torch.cuda.Event``)."""

    def __init__(self, device: SimDevice, enable_timing: bool = False, blocking: bool = False,
                 interprocess: bool = False) -> None:
        self.device = device
        self.enable_timing = enable_timing
        self._recorded: tuple[SimStream, int] | None = None
        self._time: float | None = None

    def record(self, stream: SimStream | None = None) -> None:
        stream = stream or self.device.current_stream()

        def mark() -> None:
            self._time = time.perf_counter()

        self._time = None
        # Only a timing event needs the stream thread to stamp it; any other is a bare position.
        self._recorded = (stream, stream._submit(mark if self.enable_timing else None, 0.0, "event record"))

    def query(self) -> bool:
        if self._recorded is None:
            return True
        stream, seq = self._recorded
        return stream._completed >= seq

    def synchronize(self, timeout: float | None = None) -> None:
        if self._recorded is None:
            return
        stream, seq = self._recorded
        stream._wait_for(seq, timeout)
        stream._raise_error(upto_seq=seq)

    def wait(self, stream: SimStream | None = None) -> None:
        (stream or self.device.current_stream()).wait_event(self)

    def elapsed_time(self, end_event: SimEvent) -> float:
        """Milliseconds between two completed timing events; corrupted under a CC profile."""
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("Both events must be created with enable_timing=True")
        if self._time is None or end_event._time is None:
            raise RuntimeError("Both events must be recorded and completed before elapsed_time")
        return self.device.event_corruption.corrupt((end_event._time - self._time) * 1e3)


class SimGraph:
    """A captured sequence of launches (like ``torch.cuda.CUDAGraph``): one replay queues every node as a
    single item and costs the caller the profile's ``graph_replay_extra_s`` once, not a launch each."""

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self._nodes: list[tuple[Callable[[], Any] | None, float, str]] = []

    def __len__(self) -> int:
        return len(self._nodes)

    def replay(self, stream: SimStream | None = None) -> None:
        dev = self.device
        nodes = list(self._nodes)

        def run_all() -> None:
            for fn, duration_s, _label in nodes:
                wait_s(duration_s)
                if fn is not None:
                    fn()

        # A graph of empty nodes has nothing to run: submitted as such, it completes without a hand-off.
        work = run_all if any(fn is not None or duration_s > 0 for fn, duration_s, _ in nodes) else None
        charge_s(dev.profile.graph_replay_extra_s)
        (stream or dev.current_stream())._submit(work, 0.0, f"graph replay ({len(nodes)} nodes)")
        dev.stats["graph_replays"] += 1
