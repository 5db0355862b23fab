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

Guarantees: a slot is reserved from ``stage`` until its inputs are consumed (``tensors``,
``copy_regions``, or ``release`` after ``views``; see :mod:`.inputs`), and written again only after every
consumer stream that read it has passed an event recorded after its last read (events, never sleeps).
More stages in flight than slots grow the ring up to ``max_slots``; past that a stage waits up to
``wait_s`` for a reservation to end, then falls back to a plain copy (one warning per stager, counted
in ``fallbacks``): never a slot that someone may still read. A slot that is released but still read
on the device is reused behind a device-side wait on its readers' events. A failed copy is raised by the consumer (``wait`` / ``tensors`` / ``views`` /
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

from ..packing import ALIGN, Layout, Segment, byte_pieces, plan
from ..readback.backend import DeviceBackend, backend_for
from .inputs import StagedInputs, host_tensors

if TYPE_CHECKING:
    import torch

log = logging.getLogger("cc_runtime.staging")

DEFAULT_SLOTS = 2
DEFAULT_MAX_SLOTS = 8
MIN_SLOT_BYTES = 64 << 10
DEFAULT_WAIT_S = 0.05


class _Slot:
    __slots__ = ("device", "host", "releases", "copied", "pinned", "reserved")

    def __init__(self) -> None:
        self.device: Any = None
        self.host: Any = None
        self.pinned = False
        self.reserved = False  # from stage() until its inputs are consumed (see .inputs)
        self.releases: list[Any] = []  # events recorded on consumer streams after their last read
        self.copied: Any = None  # event after the H2D (a pinned host buffer is read until then)

    @property
    def capacity(self) -> int:
        return 0 if self.device is None else int(self.device.numel())

    def free(self) -> bool:
        self.releases = [e for e in self.releases if not e.query()]
        return not self.reserved and not self.releases and (self.copied is None or self.copied.query())


class H2DStager:
    """Stages host inputs to ``device`` through a ring of device slots on a private side stream.

    ``cc``: whether host->device copies are CC crossings (None: the device's own CC flag for a
    SimDevice, else cc_runtime's CC state). Off CC every call is a pass-through plain copy.
    ``pin_memory``: pinned host slots (default: on CUDA). ``non_blocking``: queue the H2D instead of
    waiting for it (default: when pinned). ``wait_s``: how long a stage waits for a reserved slot when
    the ring is at ``max_slots`` before it copies plainly. ``verify``: fill staged device memory with
    a poison pattern before it is written (None: ``CC_RUNTIME_STAGING_VERIFY``).
    """

    def __init__(self, device: Any = None, *, cc: bool | None = None, slots: int = DEFAULT_SLOTS,
                 max_slots: int = DEFAULT_MAX_SLOTS, pin_memory: bool | None = None,
                 non_blocking: bool | None = None, wait_s: float = DEFAULT_WAIT_S,
                 verify: bool | None = None) -> None:
        if not 1 <= slots <= max_slots:
            raise ValueError(f"need 1 <= slots <= max_slots, got slots={slots}, max_slots={max_slots}")
        from .readers import verify_enabled

        self.backend: DeviceBackend = backend_for(device)
        self.cc = _cc_of(self.backend) if cc is None else bool(cc)
        self.max_slots = max_slots
        self.wait_s = max(0.0, float(wait_s))
        self.verify = verify_enabled() if verify is None else bool(verify)
        self.stream = self.backend.new_stream()  # private: a copy here never waits behind a forward
        self._slots = [_Slot() for _ in range(slots)]
        self._next = 0
        self._retired: list[_Slot] = []
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._pin = pin_memory
        # None: non_blocking exactly when the host buffer is pinned (a pageable non_blocking copy is
        # synchronous on CUDA anyway). The host buffer is reused only after its copy's event completes.
        self._non_blocking = non_blocking
        self._seq = 0
        self._pad: Any = None
        self._layouts: dict[tuple[Any, ...], Layout] = {}  # a step's shapes repeat: plan once per shape set
        self.staged = 0
        self.passed_through = 0
        self.fallbacks = 0  # stages that found every slot reserved for wait_s and copied plainly

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
        """Stage ``hosts`` at the byte offsets of ``layout`` (segments in order, non-overlapping).

        The host bytes are packed before this returns: the caller may change ``hosts`` at once."""
        import torch

        slot = self.reserve(layout.nbytes)
        if slot is None:
            return self._plain(hosts)
        n = layout.nbytes
        if self._pad is None:
            self._pad = torch.empty(ALIGN, dtype=torch.uint8)  # gap bytes: never read
        pieces = byte_pieces(hosts, layout, self._pad)
        if pieces:
            torch.cat(pieces, out=slot.host[:n])
        return self.cross(slot, layout)

    def reserve(self, nbytes: int) -> _Slot | None:
        """A slot with room for ``nbytes``, reserved for the caller; None when every slot stayed
        reserved for ``wait_s`` (the caller then copies plainly). Its host buffer is the caller's to
        pack into until :meth:`cross`."""
        import time

        deadline = None
        with self._lock:
            while True:
                slot = self._acquire(nbytes)
                if slot is not None:
                    slot.reserved = True
                    self._fit(slot, nbytes)
                    slot.releases = []  # the side stream already waits for them before its next copy
                    return slot
                now = time.monotonic()
                deadline = now + self.wait_s if deadline is None else deadline
                if now >= deadline:
                    break
                # A reservation ends through release()/tensors() (which notify) or a dropped
                # StagedInputs (which cannot take the lock): poll too.
                self._freed.wait(min(deadline - now, 0.002))
            self.fallbacks += 1
            first = self.fallbacks == 1
        if first:
            log.warning("cc_runtime: all %d H2D staging slots stayed reserved for %.0f ms (inputs staged but "
                        "not yet consumed); copying plainly instead (logged once per stager)",
                        len(self._slots), self.wait_s * 1e3)
        return None

    def grow_host(self, slot: _Slot, nbytes: int, keep: int) -> None:
        """Make ``slot``'s host buffer hold ``nbytes``, keeping its first ``keep`` bytes (a reserved slot)."""
        if slot.host is not None and int(slot.host.numel()) >= nbytes:
            return
        old = slot.host
        with self._lock:
            self._fit(slot, nbytes, keep_host=old[:keep] if old is not None and keep else None)

    def cross(self, slot: _Slot, layout: Layout) -> StagedInputs:
        """Copy the packed ``slot.host[:layout.nbytes]`` of a reserved slot to the device in one crossing."""
        n = layout.nbytes
        with self._lock:
            seq, self._seq = self._seq, self._seq + 1
            if slot.capacity < n:
                self._fit(slot, n, keep_host=slot.host[:n])
        non_blocking = slot.pinned if self._non_blocking is None else self._non_blocking
        ready: Any = None
        error: BaseException | None = None
        with self.backend.stream(self.stream):
            try:
                if n:
                    if self.verify:
                        self.poison(slot.device[:n])
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
        with self._lock:
            self.staged += 1
        return StagedInputs(self, slot, layout, ready, error=error, seq=seq)

    def poison(self, buf: torch.Tensor) -> None:
        """In verify mode, fill device bytes ``buf`` with the poison pattern, in order on the current stream."""
        if self.verify and buf.numel():
            from .readers import POISON_BYTE

            self.backend.launch(lambda: buf.fill_(POISON_BYTE))

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
        capturing = self.backend.is_capturing()
        for h in hosts:
            dst = self.backend.device_bytes(h.numel() * h.element_size())
            view = self._dev(dst.view(h.dtype).view(h.shape))
            if h.numel():
                sim = getattr(self.backend, "sim", None)
                pinned = bool(sim.is_pinned(h)) if sim is not None else _is_pinned(h)
                if pinned and not capturing:
                    # Queued, so it reads its source later: a private pinned copy, so the caller may
                    # reuse ``h`` at once, as after a staged copy. (Captured copies read the caller's
                    # buffer at every replay, as upstream's do.)
                    h = self._pinned_clone(h)
                # Pinned sources copy asynchronously (and can be captured); pageable ones are synchronous.
                # Under CC the choice is not left to Tensor.is_pinned(), reported to read False for pinned
                # memory there: every H2D is host-synchronous under CC (a pageable one's source is read
                # before the call returns), so non_blocking hands no reader other bytes, and it keeps a
                # pinned copy capturable.
                non_blocking = self._non_blocking if self._non_blocking is not None else (self.cc or pinned)
                self.backend.copy_to_device(view, h, non_blocking=non_blocking)
            outs.append(view)
        with self._lock:
            self.passed_through += 1
        layout = Layout(tuple(Segment(0, h.numel() * h.element_size(), h.dtype, tuple(h.shape)) for h in hosts), 0)
        return StagedInputs(None, None, layout, None, direct=self._mark(outs))

    def _pinned_clone(self, h: torch.Tensor) -> torch.Tensor:
        import torch

        if getattr(self.backend, "sim", None) is not None:
            return h.clone()  # the simulated device counts host memory as pinned unless marked
        out = torch.empty(h.shape, dtype=h.dtype, pin_memory=True)  # torch keeps it alive for the copy
        return out.copy_(h)

    def _acquire(self, nbytes: int) -> _Slot | None:
        # Under self._lock. Never a reserved slot: its inputs may not have been read yet.
        self._retired = [s for s in self._retired if not s.free()]
        n = len(self._slots)
        for k in range(n):
            slot = self._slots[(self._next + k) % n]
            if slot.free():
                self._next = (self._next + k + 1) % n
                return slot
        if n < self.max_slots:
            slot = _Slot()
            self._slots.append(slot)
            return slot
        for k in range(n):  # released, but still read on the device: wait there, not on the host
            slot = self._slots[(self._next + k) % n]
            if not slot.reserved:
                self._next = (self._next + k + 1) % n
                break
        else:
            return None
        with self.backend.stream(self.stream):
            for e in slot.releases:
                self.backend.wait_event(e)
        if slot.copied is not None and not slot.copied.query():
            # Its last copy may still read the host buffer: pack into a new one, never over it.
            old = _Slot()
            old.host, old.copied = slot.host, slot.copied
            self._retired.append(old)
            slot.host = None
        return slot  # its releases stay until _fit: a device buffer replaced there is retired with them

    def _fit(self, slot: _Slot, nbytes: int, keep_host: Any = None) -> _Slot:
        # Under self._lock. Grows a slot; what it replaces stays alive until its readers are done.
        if slot.capacity >= nbytes and slot.host is not None and int(slot.host.numel()) >= nbytes:
            return slot
        import torch

        if slot.capacity < nbytes:
            if slot.device is not None and slot.releases:
                old = _Slot()
                old.device, old.releases = slot.device, slot.releases
                self._retired.append(old)
                slot.releases = []
            slot.device = self.backend.device_bytes(max(MIN_SLOT_BYTES, 1 << max(0, (nbytes - 1).bit_length())))
        size = slot.capacity
        if slot.host is not None and int(slot.host.numel()) >= size:
            return slot
        if slot.host is not None and slot.copied is not None and not slot.copied.query():
            old = _Slot()
            old.host, old.copied = slot.host, slot.copied
            self._retired.append(old)
        pin = self._pin if self._pin is not None else getattr(slot.device, "is_cuda", False)
        try:
            host = torch.empty(size, dtype=torch.uint8, pin_memory=bool(pin))
            slot.pinned = bool(pin)
        except RuntimeError:  # pinned memory refused: pageable, same single crossing
            host = torch.empty(size, dtype=torch.uint8)
            slot.pinned = False
        if keep_host is not None and keep_host.numel():
            host[: keep_host.numel()].copy_(keep_host)
        slot.host = host
        slot.copied = None
        return slot

    def _release(self, slot: _Slot, read: bool = True) -> None:
        """End ``slot``'s reservation; ``read``: reads of it are queued on the current stream."""
        ev = None
        if read:
            ev = self.backend.new_event()
            ev.record()
        with self._lock:
            if ev is not None:
                slot.releases.append(ev)
            slot.reserved = False
            self._freed.notify_all()

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
