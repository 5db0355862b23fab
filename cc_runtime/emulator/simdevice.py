"""A simulated GPU for CPU-only machines: real background threads, CUDA-like streams, CC costs.

It offers the part of ``torch.cuda`` that readback workers and scheduler loops use, so CPU CI can
exercise real overlap behaviour with real threads. Every number it produces is *simulated*.

- **Streams** (``Stream()``, ``current_stream()``, ``stream(s)`` context manager) each own one
  background thread that runs submitted work strictly in submission order.
- **Kernels**: ``launch(fn, duration_s)`` queues ``fn`` on a stream; the stream thread spends
  ``duration_s`` (scaled by the profile's compute/memory-bound factor) and then calls ``fn()``. Under
  a CC profile the *caller* first pays ``profile.launch_extra_s``.
- **Device memory** is ordinary CPU tensors that this device has registered as resident (a registry
  of weak references by ``id``: no wrapper class, so torch ops work on them unchanged inside launched
  work). ``empty``/``zeros``/``to_device`` create them, ``is_device(t)`` tells them apart.
- **Copies** ``copy_(dst, src, stream, non_blocking)`` cost ``profile.copy_cost_s(n, direction, pinned)``
  in total (host tensors are pinned unless marked with ``mark_pageable``). With a CC profile a pinned
  host<->device copy is host-synchronous as under real CC: the calling thread waits for everything
  already queued on *its* stream (not other streams), then copies and pays the cost; pageable H2D
  does the same when ``profile.pageable_h2d_blocking``, otherwise the caller pays the staging cost and
  the copy is queued; with ``copies_serialize_across_streams`` copies run one at a time across streams
  and threads. CC off: a ``non_blocking`` pinned copy is queued on the stream and returns at once; a
  blocking one is queued and waited for; pageable D2H is always synchronous (as in CUDA).
- **CC refusals**: ``host_register(t)`` and ``multicast_create()`` return 801 under a profile where
  they fail (the GPU emulator's :mod:`.bindings` does the same to the CUDA bindings).
- **Errors**: an exception raised by queued work is re-raised (as ``SimDeviceError`` from the original)
  by the next ``synchronize()`` of that stream or of the device, or ``synchronize()`` of an event
  recorded after it; later work on that stream is skipped until then (CUDA's sticky error), never hung.
- **Graphs**: ``g = Graph(); with capture(g): launch(...)`` records launches; ``g.replay()`` queues
  them as one item and charges ``profile.graph_replay_extra_s`` once (CC), not a launch cost per node.
- **Charges**: every profile cost the *calling* thread pays (launch and D2D extras, a CC copy's cost)
  is a :func:`.clock.charge_until` wait, so ``clock.charged_cpu_s(thread)`` tells a thread's CPU spent
  in emulated CC charges apart from its own work; device time (a kernel's duration) is spent on the
  stream thread and is not a charge.
- **Events** (``Event(enable_timing)``): ``record``, ``query``, ``synchronize``, ``wait``,
  ``elapsed_time`` (corrupted per the profile under CC, seeded).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .channel import CopyChannel
from .clock import charge_s, charge_until, wait_until
from .events import EventCorruption
from .profiles import OFF, Profile, load_profile
from .simstream import SimDeviceError, SimEvent, SimGraph, SimStream

log = logging.getLogger("cc_runtime.emulator")

#: cudaErrorNotSupported / CUDA_ERROR_NOT_SUPPORTED.
CUDA_ERROR_NOT_SUPPORTED = 801

__all__ = ["SimDevice", "SimDeviceError", "SimEvent", "SimGraph", "SimStream"]


_STAT_KEYS = {d: (f"copies_{d}", f"bytes_{d}") for d in ("h2h", "h2d", "d2h", "d2d")}


class _StreamContext:
    """``SimDevice.stream(s)``: a plain class, not a generator context manager (the readback worker
    enters one per copy, and a generator costs several calls more each time)."""

    __slots__ = ("_local", "_stream", "_prev")

    def __init__(self, local: threading.local, stream: SimStream | None) -> None:
        self._local, self._stream = local, stream

    def __enter__(self) -> SimStream | None:
        if self._stream is not None:
            self._prev = getattr(self._local, "stream", None)
            self._local.stream = self._stream
        return self._stream

    def __exit__(self, *exc: object) -> None:
        if self._stream is not None:
            self._local.stream = self._prev


class SimDevice:
    """A simulated GPU. ``profile`` None (or ``"off"``) means CC off; any CC profile turns CC on."""

    simulated = True

    def __init__(self, profile: Profile | str | None = None, name: str = "sim:0", seed: int = 0) -> None:
        self.profile: Profile = load_profile(profile)
        self.cc = self.profile.cc
        self.name = name
        self.event_corruption = EventCorruption(self.profile, seed)
        # Reentrant: the weakref callback that forgets freed device tensors takes this lock, and a GC
        # pass can run that callback on a thread that already holds it (inside Stream()/mark_device).
        self._lock = threading.RLock()
        self._resident: dict[int, weakref.ref[Any]] = {}
        self._pageable: dict[int, weakref.ref[Any]] = {}
        self._channel = CopyChannel()
        self._local = threading.local()
        self._streams: list[SimStream] = []
        self.stats: collections.Counter[str] = collections.Counter()
        self._shut = False
        self.default_stream = self.Stream(name="default")

    def __repr__(self) -> str:
        return f"<SimDevice {self.name} cc={self.profile.label} (simulated)>"

    def __enter__(self) -> SimDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- torch.cuda-like surface ---------------------------------------------------------------
    def Stream(self, priority: int = 0, name: str | None = None) -> SimStream:  # noqa: N802 - torch's name
        with self._lock:
            s = SimStream(self, name or f"stream{len(self._streams)}", priority)
            self._streams.append(s)
        return s

    def Event(self, enable_timing: bool = False, blocking: bool = False,  # noqa: N802 - torch's name
              interprocess: bool = False) -> SimEvent:
        return SimEvent(self, enable_timing, blocking, interprocess)

    def current_stream(self) -> SimStream:
        return getattr(self._local, "stream", None) or self.default_stream

    def set_stream(self, stream: SimStream) -> None:
        self._local.stream = stream

    def stream(self, stream: SimStream | None) -> _StreamContext:
        """Like ``torch.cuda.stream(s)``: work issued by this thread goes to ``stream`` inside."""
        return _StreamContext(self._local, stream)

    def synchronize(self, timeout: float | None = None) -> None:
        """Wait for every stream; the first failure found is raised (after all were waited for)."""
        streams = list(self._streams)
        first: BaseException | None = None
        for s in streams:
            try:
                s.synchronize(timeout)
            except SimDeviceError as exc:
                first = first or exc
        if first is not None:
            raise first

    def current_device(self) -> int:
        return 0

    def device_count(self) -> int:
        return 1

    def get_device_name(self, device: int | None = None) -> str:
        return f"{self.name} (simulated, CC {self.profile.label})"

    def is_available(self) -> bool:
        return not self._shut

    # -- work ----------------------------------------------------------------------------------
    def launch(self, fn: Callable[[], Any] | None, duration_s: float = 0.0, stream: SimStream | None = None,
               *, kind: str = "compute", label: str = "kernel", inline_if_idle: bool = False) -> None:
        """Queue a "kernel": the stream thread spends ``duration_s`` then calls ``fn()``.

        ``kind`` ``compute`` or ``memory`` picks the profile's slow-down. The caller pays the profile's
        extra launch cost (CC) before the work is queued, as with an encrypted pushbuffer. While this
        thread captures a graph (``capture``), the kernel is recorded into it instead, uncharged.

        ``inline_if_idle``: a zero-duration kernel on a stream with nothing queued or running runs on
        the calling thread, in stream order (see ``SimStream._run_if_idle``). A GPU runs such a kernel
        without waking any host thread; handing it to the stream thread costs the caller two thread
        switches and a GIL round trip (tens of us of CPU on a loaded 2-core VM), more than the
        kernel's own CPU, which the caller pays instead. For callers that wait for it next anyway.
        """
        scale = self.profile.memory_bound_scale if kind == "memory" else self.profile.compute_scale
        graph = getattr(self._local, "capturing", None)
        if graph is not None:
            graph._nodes.append((fn, duration_s * scale, label))
            return
        stream = stream or self.current_stream()
        charge_s(self.profile.launch_extra_s)
        if inline_if_idle and fn is not None and duration_s <= 0 and stream._run_if_idle(fn, label) is not None:
            self.stats["inline_launches"] += 1
        else:
            stream._submit(fn, duration_s * scale, label)
        self.stats["launches"] += 1

    def Graph(self) -> SimGraph:  # noqa: N802 - like torch.cuda.CUDAGraph
        return SimGraph(self)

    @contextlib.contextmanager
    def capture(self, graph: SimGraph) -> Iterator[SimGraph]:
        """Like ``torch.cuda.graph(g)``: launches by this thread are recorded into ``graph``."""
        if getattr(self._local, "capturing", None) is not None:
            raise SimDeviceError(f"{self.name}: already capturing a graph on this thread")
        graph._nodes.clear()
        self._local.capturing = graph
        try:
            yield graph
        finally:
            self._local.capturing = None

    def is_current_stream_capturing(self) -> bool:
        return getattr(self._local, "capturing", None) is not None

    def copy_(self, dst: Any, src: Any, stream: SimStream | None = None, non_blocking: bool = False,
              *, inline_if_idle: bool = False) -> Any:
        """``dst.copy_(src)`` between host tensors and device-resident ones, with CC semantics.

        The host side is pinned unless marked with :meth:`mark_pageable`. A copy's cost is the
        profile's ``copy_cost_s`` in total (the host memcpy counts toward it). ``inline_if_idle``: a
        D2D copy on a stream with nothing queued runs on the calling thread, in stream order, as
        ``launch(inline_if_idle=True)`` does (for callers that issue thousands of small D2D copies)."""
        entered = time.perf_counter()
        # The whole path up to the charge runs inside the copy's cost (its deadline counts from
        # ``entered``); every microsecond spent here raised the floor under the smallest copies the
        # simulated device can play (a 64 B copy: ~5.5 us here against B200's published 3-6 us).
        stream = stream or getattr(self._local, "stream", None) or self.default_stream
        direction = self.direction(dst, src)
        if direction != "h2h" and getattr(self._local, "capturing", None) is not None:
            # CUDA refuses host-synchronous copies during capture; keep captured graphs launch-only.
            raise SimDeviceError(f"{self.name}: {direction} copy while capturing a graph is not supported")
        nbytes = src.nbytes
        copies_key, bytes_key = _STAT_KEYS[direction]
        self.stats[copies_key] += 1
        self.stats[bytes_key] += nbytes
        if direction == "h2h":
            dst.copy_(src)
            return dst
        if direction == "d2d":
            if self.cc:
                charge_s(self.profile.d2d_extra_s)  # CC's extra is paid by the issuing thread, as a launch's
            # A D2D on an idle stream runs here, in stream order, when it is non_blocking or the caller
            # asks (inline_if_idle): handing it to the stream thread cost the issuer a wake-up and a GIL
            # round trip (the device's own overhead, read as part of CC's D2D extra on a loaded machine).
            # Its ~2.5 us of device time is not waited for.
            if (non_blocking or inline_if_idle) and stream._run_if_idle(lambda: dst.copy_(src), "d2d copy") is not None:
                self.stats["inline_d2d"] += 1
                return dst
            stream._submit(lambda: dst.copy_(src), OFF.copy_cost_s(nbytes, "d2d"), "d2d copy")
            if not non_blocking:
                stream.synchronize()
            return dst
        p = self.profile
        pinned = self._host_pinned(src if direction == "h2d" else dst)
        cost = p.copy_cost_s(nbytes, direction, pinned)
        if not pinned:
            self.stats[f"pageable_{direction}"] += 1
        if self.cc and p.host_synchronous(direction, pinned):
            # Real CC: the bounce-buffer copy blocks the issuing thread until the stream's earlier
            # work and the copy itself are done; non_blocking changes nothing.
            start = entered
            if not stream.query():
                stream.synchronize()
                start = time.perf_counter()
            else:
                stream._raise_error()
            begin = self._slot(start, cost)
            dst.copy_(src)
            charge_until(begin + cost)
            return dst
        if direction == "h2d" and not pinned and (self.cc or non_blocking):
            # Pageable H2D that does not wait for the stream (CC off with non_blocking, or the CC
            # reading where it is not host-synchronous): the caller stages the data and pays the
            # copy's cost; the copy into device memory is queued behind the stream's earlier work.
            staged = src.clone()
            charge_until(self._slot(entered, cost) + cost)
            stream._submit(lambda: dst.copy_(staged), 0.0, "pageable h2d copy")
            self.stats["async_pageable_h2d"] += 1
            return dst
        blocking = not non_blocking or not pinned  # pageable D2H is synchronous in CUDA
        if blocking and stream.query():
            # An idle stream and a blocking copy: copy inline, sparing a thread hand-off the real
            # device would not pay (order is kept: nothing is queued ahead of it).
            stream._raise_error()
            dst.copy_(src)
            charge_until(entered + cost)
            return dst

        def timed_copy() -> None:
            t0 = time.perf_counter()
            dst.copy_(src)
            wait_until(t0 + cost)

        stream._submit(timed_copy, 0.0, f"{direction} copy")
        if blocking:
            stream.synchronize()
        return dst

    def _slot(self, start: float, cost: float) -> float:
        """When a copy issued at ``start`` may begin: ``start``, or later where the profile says copies
        serialise across streams (see :mod:`.channel`)."""
        if not (self.cc and self.profile.copies_serialize_across_streams):
            return start
        begin = self._channel.reserve(start, cost)
        if begin > start:
            self.stats["serialized_copies"] += 1
        return begin

    # -- host memory and CC refusals -------------------------------------------------------------
    def mark_pageable(self, tensor: Any) -> Any:
        """Treat host ``tensor`` as pageable (unregistered) memory for copies; returns it.

        Host tensors count as pinned unless marked (the simulated device's default since its first
        version; CUDA's default is the other way round)."""
        key = id(tensor)

        def forget(_ref: Any, key: int = key) -> None:
            with self._lock:
                if self._pageable.get(key) is _ref:
                    del self._pageable[key]

        with self._lock:
            self._pageable[key] = weakref.ref(tensor, forget)
        return tensor

    def pin_memory(self, tensor: Any) -> Any:
        """Treat host ``tensor`` as pinned (``cudaHostAlloc``-like: allowed under CC too); returns it."""
        with self._lock:
            self._pageable.pop(id(tensor), None)
        return tensor

    def is_pinned(self, tensor: Any) -> bool:
        """Like ``Tensor.is_pinned()``: False for pinned memory too under a profile with
        ``pinned_reads_unpinned`` (reported under CC; copies still cost what pinned memory costs)."""
        return self._host_pinned(tensor) and not (self.cc and self.profile.pinned_reads_unpinned)

    def _host_pinned(self, tensor: Any) -> bool:
        ref = self._pageable.get(id(tensor))
        return not (ref is not None and ref() is tensor)

    def host_register(self, tensor: Any) -> int:
        """Like ``cudaHostRegister``: 0, or 801 (not supported) under a profile where it fails under CC."""
        if self.cc and self.profile.host_register_fails:
            self.stats["host_register_refused"] += 1
            return CUDA_ERROR_NOT_SUPPORTED
        self.pin_memory(tensor)
        return 0

    def multicast_create(self, nbytes: int = 2 << 20) -> int:
        """Like ``cuMulticastCreate``: 0, or CUDA_ERROR_NOT_SUPPORTED (801) when CC makes it unavailable."""
        if self.cc and self.profile.multicast_unsupported:
            self.stats["multicast_refused"] += 1
            return CUDA_ERROR_NOT_SUPPORTED
        return 0

    def direction(self, dst: Any, src: Any) -> str:
        return ("d" if self.is_device(src) else "h") + "2" + ("d" if self.is_device(dst) else "h")

    # -- device memory -------------------------------------------------------------------------
    def mark_device(self, tensor: Any) -> Any:
        """Register an existing CPU tensor as device-resident (no copy, no cost) and return it."""
        key = id(tensor)

        def forget(_ref: Any, key: int = key) -> None:
            with self._lock:
                if self._resident.get(key) is _ref:
                    del self._resident[key]

        with self._lock:
            self._resident[key] = weakref.ref(tensor, forget)
        return tensor

    def is_device(self, tensor: Any) -> bool:
        ref = self._resident.get(id(tensor))
        return ref is not None and ref() is tensor

    def empty(self, shape: Sequence[int] | int, dtype: Any = None) -> Any:
        import torch

        return self.mark_device(torch.empty(shape, dtype=dtype))

    def zeros(self, shape: Sequence[int] | int, dtype: Any = None) -> Any:
        import torch

        return self.mark_device(torch.zeros(shape, dtype=dtype))

    def to_device(self, tensor: Any, stream: SimStream | None = None, non_blocking: bool = False) -> Any:
        """A new device-resident copy of a host tensor (an H2D copy with its costs)."""
        import torch

        dst = self.mark_device(torch.empty_like(tensor))
        return self.copy_(dst, tensor, stream, non_blocking)

    def to_host(self, tensor: Any, stream: SimStream | None = None, non_blocking: bool = False) -> Any:
        """A new host copy of a device-resident tensor (a D2H copy with its costs)."""
        import torch

        return self.copy_(torch.empty_like(tensor), tensor, stream, non_blocking)

    # -- lifecycle -----------------------------------------------------------------------------
    def shutdown(self, timeout: float = 5.0) -> None:
        """Finish queued work and stop the stream threads. Unreported errors are logged, not raised."""
        if self._shut:
            return
        self._shut = True
        for s in list(self._streams):
            s._close(timeout)
            if s._error is not None:
                log.warning("%s: stream %s had an unreported failure at shutdown: %r", self.name, s.name,
                            s._error[0])
