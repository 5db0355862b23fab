"""A device->host readback worker: copies run on a private stream from a worker thread.

Under CC a device->host copy is host-synchronous: the issuing thread waits for everything queued
before it on the stream, then for the (encrypted) copy. A scheduler that reads back step N while step
N+1 is queued therefore stalls for a whole forward pass. The worker takes that wait: ``submit`` records
a readiness event on the caller's current stream (cheap, never blocks) and returns a :class:`CopyDone`
that stands in for the CUDA event consumers already call ``synchronize()`` on.

Guarantees: completion in submission order (one thread, FIFO); a failed copy re-raises in the
consumer's ``synchronize()`` with the cause; a consumer never hangs (every pending copy is completed
or failed, at shutdown too, and if the thread ever died); a bounded queue makes a producer that runs
ahead wait (backpressure) instead of piling up device memory; after shutdown ``submit`` runs the copy
inline, so late callers still get their data.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .backend import DeviceBackend, backend_for

if TYPE_CHECKING:
    import torch

log = logging.getLogger("cc_runtime.readback")

DEFAULT_MAX_PENDING = 64
_POLL_S = 0.25  # how often a waiting consumer checks that the worker is still alive
# Serialises CopyDone completion: the worker and a shutdown that timed out may finish the same copy.
_finish_lock = threading.Lock()


class ReadbackError(RuntimeError):
    """A device->host copy failed; the destination host tensors are invalid. ``__cause__`` says why."""


class ReadbackShutdownError(ReadbackError):
    """The worker shut down (bounded wait expired) before this copy could finish."""


class CopyDone:
    """Host-side stand-in for the ``copy_done`` CUDA event of one readback.

    ``record`` is a no-op (the worker signals completion); ``synchronize`` blocks until the copy has
    finished and re-raises its error; ``query`` says whether it finished (successfully or not).
    ``result`` is what the submitted function returned (for coalesced reads: the host tensors).

    Completion is a plain lock held from creation until the copy finishes (a ``threading.Event`` is
    a Python-level condition variable: a lock allocated per wait, a notify loop per set), so the
    worker signals with one release and a consumer waits with one acquire.
    """

    __slots__ = ("_gate", "_done", "_error", "_result", "_worker", "seq", "__weakref__")

    def __init__(self, worker: ReadbackWorker | None = None, seq: int = -1) -> None:
        self._gate = threading.Lock()
        self._gate.acquire()  # released once, by whoever finishes the copy
        self._done = False
        self._error: BaseException | None = None
        self._result: Any = None
        self._worker = weakref.ref(worker) if worker is not None else None
        self.seq = seq

    # -- the torch.cuda.Event surface consumers use ------------------------------------------
    def record(self, *args: Any, **kwargs: Any) -> None:
        """No-op: kept so code written for a CUDA event can call it unchanged."""

    def query(self) -> bool:
        return self._done

    def _wait(self, timeout: float) -> bool:
        if self._gate.acquire(timeout=timeout):
            self._gate.release()  # pass it on: every waiter, now and later, gets through
            return True
        return self._done

    def synchronize(self, timeout: float | None = None) -> None:
        """Wait for the copy; raise :class:`ReadbackError` (from the cause) if it failed.

        With ``timeout`` (seconds) a copy still running at the deadline raises TimeoutError.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            slice_s = _POLL_S if deadline is None else min(_POLL_S, max(0.0, deadline - time.monotonic()))
            if self._wait(slice_s):
                break
            worker = self._worker() if self._worker is not None else None
            if worker is None or not worker._thread_alive():
                # The thread is gone without signalling us: fail rather than wait forever.
                if worker is not None:
                    worker._fail_remaining("readback worker thread exited unexpectedly")
                self._finish(None, ReadbackShutdownError(f"readback #{self.seq}: worker is gone"))
            elif threading.current_thread() is worker._thread:
                raise ReadbackError(f"readback #{self.seq} waited for on the readback worker's own thread, "
                                    "which would have to run it first: it would wait forever")
            elif deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"readback #{self.seq} still running after {timeout} s")
        error = self._error
        if error is None:
            return
        if isinstance(error, ReadbackShutdownError):
            raise error
        raise ReadbackError(
            f"device->host readback #{self.seq} failed ({type(error).__name__}: {error}); "
            "destination host tensors are invalid") from error

    def wait(self, stream: Any = None) -> None:
        """A CUDA event's ``wait(stream)`` makes a stream wait; a host-side copy can only wait on the host."""
        self.synchronize()

    # -- results -----------------------------------------------------------------------------
    @property
    def result(self) -> Any:
        self.synchronize()
        return self._result

    @property
    def error(self) -> BaseException | None:
        return self._error if self._done else None

    def _finish(self, result: Any, error: BaseException | None) -> bool:
        """First completion wins (a late worker after a shutdown timeout must not overwrite a failure)."""
        with _finish_lock:
            if self._done:
                return False
            self._result, self._error = result, error
            self._done = True  # after the result: a reader that sees _done sees the result
        self._gate.release()
        return True


@dataclass
class _Item:
    seq: int
    ready: Any  # device event recorded on the producer's stream at submit time
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    done: CopyDone


_live_workers: weakref.WeakSet[ReadbackWorker] = weakref.WeakSet()
_atexit_registered = False
_registry_lock = threading.Lock()


def _shutdown_all_at_exit() -> None:
    for worker in list(_live_workers):
        try:
            worker.shutdown()
        except Exception as exc:  # noqa: BLE001 - exit must go on
            log.error("cc_runtime: readback worker shutdown at exit failed: %s", exc)


def _after_fork_in_child() -> None:
    # The worker thread does not exist in a forked child: turn every worker inline and fail what the
    # parent had pending (those copies belong to the parent's device context).
    global _finish_lock
    _finish_lock = threading.Lock()  # a parent thread may have held it at the fork
    for worker in list(_live_workers):
        worker._forked()


def _register(worker: ReadbackWorker) -> None:
    global _atexit_registered
    with _registry_lock:
        _live_workers.add(worker)
        if not _atexit_registered:
            atexit.register(_shutdown_all_at_exit)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork_in_child)
            _atexit_registered = True


class ReadbackWorker:
    """Runs device->host copies off the caller's thread, on a private stream, in submission order.

    ``device``: a SimDevice, a torch device module, a torch.device/str, a :class:`DeviceBackend`, or
    None for the current CUDA device. The worker binds to the device current at construction.
    """

    def __init__(
        self,
        device: Any = None,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        shutdown_timeout_s: float | None = None,
        name: str = "cc-runtime-readback",
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        from ..settings import get as get_setting

        self.backend: DeviceBackend = backend_for(device)
        self.shutdown_timeout_s = get_setting("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", shutdown_timeout_s)
        self.max_pending = max_pending
        self.device = self.backend.current_device()
        # Private on purpose: nobody else can queue onto it, so synchronizing it after a copy waits
        # for that copy only, never for work the caller queued after submitting.
        self.stream = self.backend.new_stream()
        self._cv = threading.Condition()
        self._items: deque[_Item] = deque()
        self._current: _Item | None = None
        self._closed = False
        self._blocked_producers = 0
        self._worker_idle = False  # the worker sleeps for work: a submission must wake it  # producers waiting for room (backpressure): only then notify them
        self._bind_error: BaseException | None = None
        self._seq = 0
        self.completed = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        _register(self)

    # -- producer side -----------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> CopyDone:
        """Queue ``fn(*args, **kwargs)`` to run on the worker, after the caller's current stream is done.

        Call it with the stream that produced the sources current (as with ``Event.record()``).
        Blocks while ``max_pending`` copies are queued (backpressure). After shutdown the copy runs
        inline and the returned object is already complete.
        """
        ready = self.backend.new_event()
        ready.record()
        # A copy submitted by a copy (on the worker thread) cannot wait for the worker: it skips the
        # bound instead of waiting for itself forever.
        bounded = threading.current_thread() is not self._thread
        with self._cv:
            while bounded and not self._closed and len(self._items) >= self.max_pending \
                    and self._thread.is_alive():
                self._blocked_producers += 1
                try:
                    self._cv.wait(_POLL_S)
                finally:
                    self._blocked_producers -= 1
            # Numbered after the wait: producers released together then append in numbering order.
            seq = self._seq
            self._seq += 1
            done = CopyDone(self, seq)
            if not self._closed and self._thread.is_alive():
                self._items.append(_Item(seq, ready, fn, args, kwargs, done))
                if self._worker_idle:
                    self._cv.notify_all()
                return done
        self._run_inline(fn, args, kwargs, done)
        return done

    def submit_coalesced(self, tensors: Sequence[torch.Tensor], **kwargs: Any) -> CopyDone:
        """Read ``tensors`` back in one crossing; ``done.result`` is the list of host tensors (views)."""
        from .coalesce import read_coalesced

        return self.submit(read_coalesced, list(tensors), backend=self.backend, **kwargs)

    @property
    def pending(self) -> int:
        with self._cv:
            return len(self._items) + (1 if self._current is not None else 0)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- shutdown ----------------------------------------------------------------------------
    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop accepting work, finish what is queued, join the thread (bounded wait).

        Returns True when every pending copy completed normally; False when the wait expired and the
        copies still pending were failed with :class:`ReadbackShutdownError` (never dropped silently).
        Idempotent.
        """
        timeout = self.shutdown_timeout_s if timeout is None else timeout
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self._thread.is_alive():
            n = self._fail_remaining(f"readback worker did not finish within {timeout} s at shutdown")
            if n:
                log.error("cc_runtime: readback worker shutdown timed out after %s s; failed %d pending copies",
                          timeout, n)
            return False
        return True

    def __enter__(self) -> ReadbackWorker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # -- worker side -------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self.backend.set_device(self.device)
        except Exception as exc:  # noqa: BLE001 - fail every copy with the cause instead of dying silently
            log.error("cc_runtime: readback worker cannot select device %s: %s", self.device, exc)
            self._bind_error = exc
        cv, items = self._cv, self._items
        try:
            while True:
                with cv:
                    self._current = None  # the previous item is finished
                    while not items and not self._closed:
                        self._worker_idle = True
                        cv.wait()
                        self._worker_idle = False
                    if not items:
                        return  # closed and drained: nothing is left behind
                    item = self._current = items.popleft()
                    if self._blocked_producers:
                        cv.notify_all()  # room in the queue for a producer held by backpressure
                self._execute(item)
        finally:
            self._fail_remaining("readback worker thread exited")

    def _execute(self, item: _Item) -> None:
        try:
            if self._bind_error is not None:
                raise self._bind_error
            # Host-side wait, not a stream wait: a stream wait would put the copy back behind work
            # the caller queues later, and under CC the copy itself would then block on it.
            item.ready.synchronize()
            with self.backend.stream(self.stream):
                result = item.fn(*item.args, **item.kwargs)
            self.backend.synchronize_stream(self.stream)
        except BaseException as exc:  # noqa: BLE001 - whatever happens, the consumer must be told
            log.error("cc_runtime: readback #%d failed: %s: %s", item.seq, type(exc).__name__, exc)
            if item.done._finish(None, exc):
                self.failed += 1
            return
        if item.done._finish(result, None):
            self.completed += 1

    def _run_inline(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                    done: CopyDone) -> None:
        # On the caller's thread and current stream (the one that produced the sources): stream
        # order replaces the readiness event; the marker makes the data valid before we return.
        try:
            result = fn(*args, **kwargs)
            marker = self.backend.new_event()
            marker.record()
            marker.synchronize()
        except BaseException as exc:  # noqa: BLE001
            done._finish(None, exc)
            return
        done._finish(result, None)

    def _fail_remaining(self, reason: str) -> int:
        with self._cv:
            items = list(self._items)
            self._items.clear()
            if self._current is not None:
                items.insert(0, self._current)
                self._current = None
            self._closed = True
            self._cv.notify_all()
        n = 0
        for item in items:
            if item.done._finish(None, ReadbackShutdownError(f"readback #{item.seq}: {reason}")):
                self.failed += 1
                n += 1
        return n

    def _thread_alive(self) -> bool:
        return self._thread.is_alive()

    def _forked(self) -> None:
        self._cv = threading.Condition()
        self._fail_remaining("process forked; the copy belongs to the parent")
