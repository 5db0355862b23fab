"""The simulated device's streams, events and graphs (see :mod:`.simdevice` for the device itself).

A stream is an in-order queue run by one background thread; events mark positions in it; a graph
replays captured launches as one queued item. Every number they produce is *simulated*.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .clock import wait_s

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
    """An in-order queue executed by one background thread (like a CUDA stream)."""

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
        self._thread = threading.Thread(target=self._run, name=f"{device.name}/{name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<SimStream {self.device.name}/{self.name} queued={self._submitted - self._completed}>"

    # -- submission ----------------------------------------------------------------------------
    def _submit(self, fn: Callable[[], Any] | None, duration_s: float = 0.0, label: str = "work") -> int:
        with self._cond:
            if self._closed:
                raise SimDeviceError(f"{self.device.name}: stream {self.name} is shut down")
            self._submitted += 1
            self._queue.append(_Item(fn, max(0.0, duration_s), label, self._submitted))
            self._cond.notify_all()
            return self._submitted

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
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
                self._cond.notify_all()

    # -- completion ----------------------------------------------------------------------------
    def _wait_for(self, seq: int, timeout: float | None = None) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._completed >= seq, timeout):
                raise TimeoutError(f"{self.device.name}: stream {self.name} did not reach work #{seq} "
                                   f"within {timeout} s")

    def _raise_error(self, upto_seq: int | None = None) -> None:
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
        with self._cond:
            target = self._submitted
        self._wait_for(target, timeout)
        self._raise_error()

    def query(self) -> bool:
        with self._cond:
            return self._completed >= self._submitted

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
        self._recorded = (stream, stream._submit(mark, 0.0, "event record"))

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

        wait_s(dev.profile.graph_replay_extra_s)
        (stream or dev.current_stream())._submit(run_all, 0.0, f"graph replay ({len(nodes)} nodes)")
        dev.stats["graph_replays"] += 1
