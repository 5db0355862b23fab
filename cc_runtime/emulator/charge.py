"""What the GPU emulator charges, and in which order: the one place the profile's semantics are imposed.

The hooks (:mod:`.tensor_hooks`, :mod:`.dispatch_mode`, :mod:`.bindings`) only decide *what* an
operation is (a copy of n bytes in a direction, from pinned or pageable memory; a launch; a replay)
and call :class:`Emulator`. The device is reached through a backend with ``device_type``,
``current_stream(device)``, ``is_capturing()`` and ``default_device(index)``: :class:`CudaBackend`
(the real GPU) or :class:`StandInBackend` (CPU tests: meta tensors and a simulated stream).

Copy semantics (each from the profile, with its source there):

- host-synchronous copies (pinned H2D/D2H; pageable H2D when ``pageable_h2d_blocking``): the thread
  first waits for its *own* stream's earlier work (not other streams': vLLM PR 52226), makes the copy,
  waits for it, and returns when ``profile.copy_cost_s`` has passed since it could start;
- pageable H2D with ``pageable_h2d_blocking`` false: the thread pays the copy's cost but does not
  wait for the stream;
- ``copies_serialize_across_streams``: one host<->device copy at a time per emulator (one context);
  a copy that had to wait for another starts its clock when that one is done;
- D2D copies pay ``d2d_extra_s`` on top of the real copy's submission.

Costs are GIL-releasing waits (:mod:`.clock`), not real AES-GCM.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .clock import charge_s, charge_until
from .events import EventCorruption
from .profiles import Profile, load_profile

__all__ = ["CudaBackend", "EmulationRefused", "Emulator", "StandInBackend", "nbytes_of"]


class EmulationRefused(RuntimeError):
    """Emulation cannot start here (real CC is on, no CUDA build, or another profile is active)."""


class CudaBackend:
    """The real device: CUDA tensors, torch.cuda streams."""

    device_type = "cuda"

    def current_stream(self, device: Any) -> Any:
        import torch

        return torch.cuda.current_stream(device)

    def is_capturing(self) -> bool:
        import torch

        return bool(torch.cuda.is_current_stream_capturing())

    def default_device(self, index: Any = None) -> Any:
        import torch

        if index is None:
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device(index) if isinstance(index, (str, torch.device)) else torch.device("cuda", index)


class StandInBackend:
    """A CPU stand-in for CUDA (tests, CPU CI): tensors of ``device_type`` (default ``meta``) count as
    device tensors and ``stream`` (e.g. a SimDevice stream) plays the current CUDA stream."""

    def __init__(self, stream: Any, device_type: str = "meta") -> None:
        self.stream = stream
        self.device_type = device_type

    def current_stream(self, device: Any) -> Any:
        return self.stream

    def is_capturing(self) -> bool:
        return False

    def default_device(self, index: Any = None) -> Any:
        import torch

        return torch.device(self.device_type)


def nbytes_of(t: Any) -> int:
    try:
        return int(t.numel() * t.element_size())
    except Exception:  # noqa: BLE001 - a tensor-like without sizes costs the fixed part only
        return 0


def is_pinned(t: Any) -> bool:
    """Whether a host tensor is page-locked; anything that cannot say counts as pageable.

    Asks torch's own C method, not ``Tensor.is_pinned``: under a profile with ``pinned_reads_unpinned``
    the emulator hooks that to read False, and the cost of a copy must still follow the real memory."""
    try:
        import torch

        base = getattr(torch._C, "TensorBase", None) or torch._C._TensorBase
        return bool(base.is_pinned(t))
    except Exception:  # noqa: BLE001 - not a tensor (a list for torch.tensor), or no accelerator
        return False


class Emulator:
    """The charging logic shared by every hook. ``stats`` counts what was charged (for tests/bench)."""

    def __init__(self, profile: Profile | str | None, backend: Any = None, seed: int = 0) -> None:
        self.profile = load_profile(profile)
        self.backend = backend if backend is not None else CudaBackend()
        self.device_type: str = self.backend.device_type
        self.event_corruption = EventCorruption(self.profile, seed)
        self.stats: collections.Counter[str] = collections.Counter()
        self.active = False
        #: What the launch hook itself costs per op (measured at install); counted toward the charge.
        self.hook_overhead_s = 0.0
        self._local = threading.local()
        self._stats_lock = threading.Lock()
        self._copy_lock = threading.Lock()  # one host<->device copy at a time (profile switch)

    def __repr__(self) -> str:
        return f"<Emulator {self.profile.label} on {self.device_type} active={self.active}>"

    def is_dev(self, device: Any) -> bool:
        return device is not None and getattr(device, "type", None) == self.device_type

    def in_copy(self) -> bool:
        return bool(getattr(self._local, "depth", 0))

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    @contextlib.contextmanager
    def _channel(self, start: float) -> Iterator[list[float]]:
        """Hold the copy channel when copies serialise; yields ``[start]``, moved to when it was free."""
        box = [start]
        if not self.profile.copies_serialize_across_streams:
            yield box
            return
        if not self._copy_lock.acquire(blocking=False):
            self._count("serialized_copies")
            self._copy_lock.acquire()
            box[0] = max(start, time.perf_counter())
        try:
            yield box
        finally:
            self._copy_lock.release()

    def copy(self, direction: str, nbytes: int | None, device: Any, do: Callable[[], Any],
             started: float | None = None, pinned: bool = True) -> Any:
        """Run ``do()`` (the real copy) the way CC would (see the module docstring).

        ``nbytes`` None: the size of the tensor ``do()`` returns (factories with host data).
        ``started``: when the hook was entered, so the hook's own overhead counts toward the cost.
        ``pinned``: whether the host side is page-locked (picks the profile's pinned or pageable line)."""
        if not self.active or self.in_copy() or self.backend.is_capturing():
            return do()
        loc = self._local
        loc.depth = getattr(loc, "depth", 0) + 1
        start = started if started is not None else time.perf_counter()
        p = self.profile
        try:
            if direction == "d2d":
                out = do()  # device-side copy: no host sync; the extra comes on top of the real submission
                charge_s(p.d2d_extra_s)
            elif p.host_synchronous(direction, pinned):
                stream = self.backend.current_stream(device)
                if not stream.query():
                    stream.synchronize()  # the stream's earlier work first, as the CC bounce copy does
                    start = time.perf_counter()
                with self._channel(start) as box:
                    out = do()
                    stream.synchronize()  # the copy itself is done before the call returns
                    if nbytes is None:
                        nbytes = nbytes_of(out)
                    charge_until(box[0] + p.copy_cost_s(nbytes, direction, pinned))
            else:  # pageable H2D read as not host-synchronous: the staging cost, no stream wait
                with self._channel(start) as box:
                    out = do()
                    if nbytes is None:
                        nbytes = nbytes_of(out)
                    charge_until(box[0] + p.copy_cost_s(nbytes, direction, pinned))
                self._count("async_pageable_h2d")
        finally:
            loc.depth -= 1
        self._count(direction)
        self._count(f"bytes_{direction}", nbytes or 0)
        if direction != "d2d" and not pinned:
            self._count(f"pageable_{direction}")
        return out

    def charged_at_dispatch(self) -> bool:
        """Whether this thread's launch-cost mode will see (and charge) a copy that reaches the dispatcher.

        The method hooks ask this only while a torch-function mode is active: such a mode may answer a
        copy without making one (cc_runtime's coalescing readback defers them into one crossing), so
        the hook leaves the charge to the dispatcher, which sees only copies that really happen."""
        import torch

        n = torch._C._len_torch_dispatch_stack()
        return any(getattr(torch._C._get_dispatch_stack_at(i), "emulator", None) is self for i in range(n))

    def launch(self, started: float) -> None:
        """Charge one eager launch whose hook was entered at ``started`` (perf_counter)."""
        if self.backend.is_capturing():
            return
        charge_until(started + self.profile.launch_extra_s - self.hook_overhead_s)
        self._count("launches")

    def replay(self) -> None:
        charge_s(self.profile.graph_replay_extra_s)
        self._count("graph_replays")

    def elapsed_time(self, ms: float) -> float:
        self._count("event_readings")
        return self.event_corruption.corrupt(ms)
