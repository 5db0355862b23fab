"""Host->device input staging: one packed host buffer, one crossing on an idle side stream.

Under CC a host->device copy is host-synchronous and first drains the stream it is issued on: an input
copy queued on the forward stream waits for the forward queued before it, and every copy pays CC's fixed
crossing cost (~20-40 us). :class:`H2DStager` packs a step's host inputs (host tensors, or Python lists
with a dtype) into one host buffer, copies it once into a ring slot of device memory on a private side
stream that nothing else queues onto (so the copy only pays for itself), and returns a
:class:`StagedInputs`: a done-object shaped like a CUDA event. A consumer stream waits for it on the
device (``wait``), then reads the inputs as views of the slot (``views`` + ``release``) or, for inputs
that outlive the step, as views of a fresh device buffer filled by one device->device copy
(``tensors``).

Guarantees: a slot is reused only after every consumer stream that read it has passed an event recorded
after its last read (events, never sleeps; when every slot is busy the ring grows up to ``max_slots``,
then the side stream waits on the device for the oldest slot; under CC the next copy drains the
side stream, so the host then waits for that slot's last reader: bounded, and not a steady state
with 8 slots); a failed copy is raised by the consumer (``wait`` / ``tensors`` / ``views`` /
``synchronize``) as :class:`StagingError` from the cause; packing is one ``torch.cat`` into the host buffer. Where staging
cannot help it steps aside (``passthrough``): CC off, graph capture (copies there are the caller's
business and a cross-stream wait would break the capture), or one tensor while the consumer stream is
idle, where the plain copy is already the cheapest.

The device is whatever :func:`cc_runtime.readback.backend.backend_for` accepts (CUDA, a torch device
module, the emulator's SimDevice): the same device layer as the readback worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..packing import ALIGN, Layout, Segment, byte_pieces, plan, unpack
from ..readback.backend import DeviceBackend, backend_for

if TYPE_CHECKING:
    import torch

log = logging.getLogger("cc_runtime.staging")

DEFAULT_SLOTS = 2
DEFAULT_MAX_SLOTS = 8
MIN_SLOT_BYTES = 64 << 10


class StagingError(RuntimeError):
    """A staged host->device copy failed; its device inputs are invalid. ``__cause__`` says why."""


class _Slot:
    __slots__ = ("device", "host", "releases", "copied", "pinned")

    def __init__(self) -> None:
        self.device: Any = None
        self.host: Any = None
        self.pinned = False
        self.releases: list[Any] = []  # events recorded on consumer streams after their last read
        self.copied: Any = None  # event after the H2D (a pinned host buffer is read until then)

    @property
    def capacity(self) -> int:
        return 0 if self.device is None else int(self.device.numel())

    def free(self) -> bool:
        self.releases = [e for e in self.releases if not e.query()]
        return not self.releases and (self.copied is None or self.copied.query())


class StagedInputs:
    """One staged copy. Shaped like the CUDA event consumers already use (``record`` is a no-op)."""

    __slots__ = ("_stager", "_slot", "layout", "ready", "_error", "_direct", "seq")

    def __init__(self, stager: H2DStager | None, slot: _Slot | None, layout: Layout, ready: Any,
                 error: BaseException | None = None, direct: list[Any] | None = None, seq: int = -1) -> None:
        self._stager, self._slot, self.layout, self.ready = stager, slot, layout, ready
        self._error, self._direct, self.seq = error, direct, seq

    @property
    def passthrough(self) -> bool:
        """True when the inputs were copied plainly on the consumer stream (nothing staged)."""
        return self._direct is not None

    # -- the torch.cuda.Event surface --------------------------------------------------------
    def record(self, *args: Any, **kwargs: Any) -> None:
        """No-op: the stager records readiness itself."""

    def query(self) -> bool:
        return self.ready is None or self._error is not None or bool(self.ready.query())

    def synchronize(self) -> None:
        """Block the host until the copy is done; raise :class:`StagingError` if it failed."""
        self._raise()
        if self.ready is not None:
            try:
                self.ready.synchronize()
            except Exception as exc:  # noqa: BLE001 - an asynchronous copy failure
                self._error = exc
                self._raise()

    def wait(self, stream: Any = None) -> None:
        """Make the current stream wait on the device for the copy; raise here if it failed."""
        self._raise()
        if self.ready is not None and self._stager is not None:
            backend = self._stager.backend
            if stream is None:
                backend.wait_event(self.ready)
            else:
                with backend.stream(stream):
                    backend.wait_event(self.ready)

    # -- consuming ---------------------------------------------------------------------------
    def views(self) -> list[torch.Tensor]:
        """The inputs as views of the staging slot, usable on the current stream after it waited.

        The slot stays reserved until :meth:`release` is called after the last use was queued.
        """
        if self._direct is not None:
            return list(self._direct)
        self.wait()
        assert self._slot is not None and self._stager is not None
        return self._stager._mark(unpack(self._slot.device, self.layout))

    def release(self) -> None:
        """Record, on the current stream, that every read of the slot views has been queued."""
        if self._slot is not None and self._stager is not None:
            self._stager._release(self._slot)

    def tensors(self) -> list[torch.Tensor]:
        """The inputs in a fresh device buffer (one device->device copy on the current stream).

        The slot is released right after that copy, so the tensors may live as long as the caller wants.
        """
        if self._direct is not None:
            return list(self._direct)
        self.wait()
        assert self._slot is not None and self._stager is not None
        backend = self._stager.backend
        n = self.layout.nbytes
        buf = backend.device_bytes(n)
        done = backend.copy_on_device(buf, self._stager._dev(self._slot.device[:n])) if n else True
        if not done:  # a copy that already completed no longer reads the slot
            self._stager._release(self._slot)
        return self._stager._mark(unpack(buf, self.layout))

    def copy_regions(self, regions: Sequence[tuple[Any, int, int]]) -> None:
        """Copy ``(dst, offset, nbytes)`` ranges of the slot into device buffers ``dst`` (one D2D each)."""
        self.wait()
        assert self._slot is not None and self._stager is not None
        backend = self._stager.backend
        done = True
        for dst, offset, nbytes in regions:
            if nbytes:
                done = backend.copy_on_device(self._stager._dev(dst[:nbytes]),
                                              self._stager._dev(self._slot.device[offset: offset + nbytes])) and done
        if not done:
            self._stager._release(self._slot)

    def _raise(self) -> None:
        if self._error is not None:
            raise StagingError(f"host->device staged copy #{self.seq} failed ({type(self._error).__name__}: "
                               f"{self._error}); its device inputs are invalid") from self._error


def host_tensors(items: Sequence[Any], dtypes: Sequence[Any] | Any = None) -> list[torch.Tensor]:
    """Host tensors for ``items`` (host tensors as they are; lists via one C-level ``torch.tensor`` each)."""
    import torch

    if dtypes is None or not isinstance(dtypes, (list, tuple)):
        dtypes = [dtypes] * len(items)
    out: list[torch.Tensor] = []
    for item, dt in zip(items, dtypes, strict=True):
        if isinstance(item, torch.Tensor):
            if item.device.type != "cpu":
                raise ValueError(f"staging takes host inputs; got a tensor on {item.device}")
            out.append(item if dt is None or item.dtype == dt else item.to(dt))
        else:
            out.append(torch.tensor(item, dtype=dt))
    return out


class H2DStager:
    """Stages host inputs to ``device`` through a ring of device slots on a private side stream.

    ``cc``: whether host->device copies are CC crossings (None: the device's own CC flag for a
    SimDevice, else cc_runtime's CC state). Off CC every call is a pass-through plain copy.
    ``pin_memory``: pinned host slots (default: on CUDA). ``non_blocking``: queue the H2D instead of
    waiting for it (default: when pinned).
    """

    def __init__(self, device: Any = None, *, cc: bool | None = None, slots: int = DEFAULT_SLOTS,
                 max_slots: int = DEFAULT_MAX_SLOTS, pin_memory: bool | None = None,
                 non_blocking: bool | None = None) -> None:
        if not 1 <= slots <= max_slots:
            raise ValueError(f"need 1 <= slots <= max_slots, got slots={slots}, max_slots={max_slots}")
        self.backend: DeviceBackend = backend_for(device)
        self.cc = _cc_of(self.backend) if cc is None else bool(cc)
        self.max_slots = max_slots
        self.stream = self.backend.new_stream()  # private: a copy here never waits behind a forward
        self._slots = [_Slot() for _ in range(slots)]
        self._next = 0
        self._retired: list[_Slot] = []
        self._lock = threading.Lock()
        self._pin = pin_memory
        # None: non_blocking exactly when the host buffer is pinned (a pageable non_blocking copy is
        # synchronous on CUDA anyway). The host buffer is reused only after its copy's event completes.
        self._non_blocking = non_blocking
        self._seq = 0
        self._pad: Any = None
        self._layouts: dict[tuple[Any, ...], Layout] = {}  # a step's shapes repeat: plan once per shape set
        self.staged = 0
        self.passed_through = 0

    # -- public ------------------------------------------------------------------------------
    def stage(self, items: Sequence[Any], dtypes: Sequence[Any] | Any = None, *,
              passthrough: bool | None = None) -> StagedInputs:
        """Pack ``items`` (host tensors or lists, with ``dtypes`` for lists) and copy them in one crossing."""
        hosts = host_tensors(items, dtypes)
        if not hosts:
            raise ValueError("nothing to stage")
        if passthrough is None:
            passthrough = self.should_pass_through(hosts)
        if passthrough:
            return self._plain(hosts)
        return self.stage_layout(hosts, self._plan(hosts))

    def copy(self, items: Sequence[Any], dtypes: Sequence[Any] | Any = None) -> list[torch.Tensor]:
        """``stage(...).tensors()``: device copies of ``items``, usable on the current stream."""
        return self.stage(items, dtypes).tensors()

    def should_pass_through(self, hosts: Sequence[torch.Tensor]) -> bool:
        """Staging only pays under CC, outside capture, and for more than one input or a busy stream."""
        if not self.cc or self.backend.is_capturing():
            return True
        return len(hosts) == 1 and bool(self.backend.current_stream().query())

    def stage_layout(self, hosts: Sequence[torch.Tensor], layout: Layout) -> StagedInputs:
        """Stage ``hosts`` at the byte offsets of ``layout`` (segments in order, non-overlapping)."""
        import torch

        with self._lock:
            seq, self._seq = self._seq, self._seq + 1
            slot = self._acquire(layout.nbytes)
            n = layout.nbytes
            if self._pad is None:
                self._pad = torch.empty(ALIGN, dtype=torch.uint8)  # gap bytes: never read
            pieces = byte_pieces(hosts, layout, self._pad)
            if pieces:
                torch.cat(pieces, out=slot.host[:n])
            non_blocking = slot.pinned if self._non_blocking is None else self._non_blocking
            ready: Any = None
            error: BaseException | None = None
            with self.backend.stream(self.stream):
                try:
                    if n:
                        self.backend.copy_to_device(self._dev(slot.device[:n]), slot.host[:n],
                                                    non_blocking=non_blocking)
                except Exception as exc:  # noqa: BLE001 - raised where the inputs are consumed
                    log.error("cc_runtime: staged host->device copy #%d failed: %s: %s", seq,
                              type(exc).__name__, exc)
                    error = exc
                if non_blocking:
                    # Queued: consumers wait for this event. A blocking copy (pageable, or any copy
                    # under CC) is complete on return, so it needs no event and no device-side wait.
                    ready = self.backend.new_event()
                    ready.record()
            slot.copied = ready
            self.staged += 1
        return StagedInputs(self, slot, layout, ready, error=error, seq=seq)

    def _plan(self, hosts: Sequence[torch.Tensor]) -> Layout:
        key = tuple((h.dtype, tuple(h.shape)) for h in hosts)
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) >= 256:  # batch sizes vary: keep the cache bounded
                self._layouts.clear()
            layout = self._layouts[key] = plan(hosts)
        return layout

    @property
    def slots(self) -> int:
        return len(self._slots)

    # -- internals ---------------------------------------------------------------------------
    def _plain(self, hosts: Sequence[torch.Tensor]) -> StagedInputs:
        """What the caller would have done: one plain copy per input on the current stream."""
        outs = []
        for h in hosts:
            dst = self.backend.device_bytes(h.numel() * h.element_size())
            view = self._dev(dst.view(h.dtype).view(h.shape))
            if h.numel():
                # Pinned sources copy asynchronously (and can be captured into a graph); pageable
                # ones are synchronous either way. Under CC the choice is not left to
                # Tensor.is_pinned(), reported to read False for pinned memory there: every H2D is
                # host-synchronous under CC, so non_blocking hands no reader other bytes, and it keeps
                # a pinned copy capturable.
                non_blocking = self._non_blocking if self._non_blocking is not None else (self.cc or _is_pinned(h))
                self.backend.copy_to_device(view, h, non_blocking=non_blocking)
            outs.append(view)
        self.passed_through += 1
        layout = Layout(tuple(Segment(0, h.numel() * h.element_size(), h.dtype, tuple(h.shape)) for h in hosts), 0)
        return StagedInputs(None, None, layout, None, direct=self._mark(outs))

    def _acquire(self, nbytes: int) -> _Slot:
        self._retired = [s for s in self._retired if not s.free()]
        n = len(self._slots)
        for k in range(n):
            slot = self._slots[(self._next + k) % n]
            if slot.free():
                self._next = (self._next + k + 1) % n
                return self._fit(slot, nbytes)
        if n < self.max_slots:
            slot = _Slot()
            self._slots.append(slot)
            return self._fit(slot, nbytes)
        # Every slot is still read somewhere: wait for the oldest on the device, not on the host.
        slot = self._slots[self._next]
        self._next = (self._next + 1) % n
        with self.backend.stream(self.stream):
            for e in slot.releases:
                self.backend.wait_event(e)
        if slot.capacity < nbytes:
            old = _Slot()
            old.device, old.host, old.releases, old.copied = slot.device, slot.host, slot.releases, slot.copied
            self._retired.append(old)  # kept alive until its readers are done
            slot.device = slot.host = None
        elif slot.copied is not None and not slot.copied.query():
            # Its last copy may still read the host buffer: pack into a new one, never over it.
            old = _Slot()
            old.host, old.copied = slot.host, slot.copied
            self._retired.append(old)
            slot.host = None
        slot.releases = []
        return self._fit(slot, nbytes)

    def _fit(self, slot: _Slot, nbytes: int) -> _Slot:
        if slot.capacity >= nbytes and slot.host is not None:
            return slot
        import torch

        if slot.capacity >= nbytes:
            size = slot.capacity  # only the host buffer is new
        else:
            size = max(MIN_SLOT_BYTES, 1 << max(0, (nbytes - 1).bit_length()))
            slot.device = self.backend.device_bytes(size)
        pin = self._pin if self._pin is not None else getattr(slot.device, "is_cuda", False)
        try:
            slot.host = torch.empty(size, dtype=torch.uint8, pin_memory=bool(pin))
            slot.pinned = bool(pin)
        except RuntimeError:  # pinned memory refused: pageable, same single crossing
            slot.host = torch.empty(size, dtype=torch.uint8)
            slot.pinned = False
        slot.copied = None
        return slot

    def _release(self, slot: _Slot) -> None:
        ev = self.backend.new_event()
        ev.record()
        with self._lock:
            slot.releases.append(ev)

    def _dev(self, t: torch.Tensor) -> torch.Tensor:
        # The simulated device knows resident tensors by identity, not views: register each view.
        sim = getattr(self.backend, "sim", None)
        return sim.mark_device(t) if sim is not None else t

    def _mark(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        sim = getattr(self.backend, "sim", None)  # the simulated device registers resident tensors
        if sim is not None:
            for t in tensors:
                sim.mark_device(t)
        return tensors


def _cc_of(backend: DeviceBackend) -> bool:
    sim = getattr(backend, "sim", None)
    if sim is not None and hasattr(sim, "cc"):
        return bool(sim.cc)
    from ..detect import cc_state

    return bool(cc_state().enabled)


def _is_pinned(t: torch.Tensor) -> bool:
    """Off CC only (where it reads true): whether ``t`` is page-locked."""
    try:
        return bool(t.is_pinned())
    except RuntimeError:  # no accelerator runtime in this build
        return False
