"""What :meth:`H2DStager.stage` hands back: one staged copy, shaped like a CUDA event, and its consumers.

A staged copy holds a ring slot from ``stage`` until its inputs are consumed: :meth:`StagedInputs.tensors`
(one device->device copy out of the slot), :meth:`StagedInputs.copy_regions`, or :meth:`StagedInputs.release`
after :meth:`StagedInputs.views`. Only then may another stage write the slot, and only after the reads
queued on consumer streams have passed (events recorded at release). A staged copy that is dropped
without ever being read gives its slot back when it is garbage-collected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..packing import Layout, unpack

if TYPE_CHECKING:
    import torch

    from .stager import H2DStager, _Slot


class StagingError(RuntimeError):
    """A staged host->device copy failed; its device inputs are invalid. ``__cause__`` says why."""


class StagedInputs:
    """One staged copy. Shaped like the CUDA event consumers already use (``record`` is a no-op)."""

    __slots__ = ("_stager", "_slot", "layout", "ready", "_error", "_direct", "seq", "_viewed")

    def __init__(self, stager: H2DStager | None, slot: _Slot | None, layout: Layout, ready: Any,
                 error: BaseException | None = None, direct: list[Any] | None = None, seq: int = -1) -> None:
        self._stager, self._slot, self.layout, self.ready = stager, slot, layout, ready
        self._error, self._direct, self.seq = error, direct, seq
        self._viewed = False

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

        The slot stays reserved (no other stage writes it) until :meth:`release` is called after the
        last use was queued.
        """
        if self._direct is not None:
            return list(self._direct)
        self.wait()
        assert self._slot is not None and self._stager is not None
        self._viewed = True
        return self._stager._mark(unpack(self._slot.device, self.layout))

    def release(self) -> None:
        """Record, on the current stream, that every read of the slot views has been queued."""
        if self._slot is not None and self._stager is not None:
            self._stager._release(self._slot, read=True)
            self._slot = None

    def tensors(self) -> list[torch.Tensor]:
        """The inputs in a fresh device buffer (one device->device copy on the current stream).

        The slot is released right after that copy, so the tensors may live as long as the caller wants.
        """
        if self._direct is not None:
            return list(self._direct)
        assert self._slot is not None and self._stager is not None, "tensors() after release()"
        self._wait_or_release()
        stager = self._stager
        n = self.layout.nbytes
        buf = stager.backend.device_bytes(n)
        stager.poison(buf)
        done = stager.backend.copy_on_device(buf, stager._dev(self._slot.device[:n])) if n else True
        stager._release(self._slot, read=not done)  # a copy that already completed no longer reads it
        self._slot = None
        return stager._mark(unpack(buf, self.layout))

    def copy_regions(self, regions: Sequence[tuple[Any, int, int]]) -> None:
        """Copy ``(dst, offset, nbytes)`` ranges of the slot into device buffers ``dst`` (one D2D each),
        then release the slot."""
        assert self._slot is not None and self._stager is not None, "copy_regions() after release()"
        self._wait_or_release()
        stager = self._stager
        done = True
        for dst, offset, nbytes in regions:
            if nbytes:
                done = stager.backend.copy_on_device(stager._dev(dst[:nbytes]),
                                                     stager._dev(self._slot.device[offset: offset + nbytes])) and done
        stager._release(self._slot, read=not done)
        self._slot = None

    def _wait_or_release(self) -> None:
        try:
            self.wait()
        except BaseException:
            # A failed copy's inputs are never read: the slot goes back to the ring.
            if self._slot is not None and self._stager is not None:
                self._stager._release(self._slot, read=False)
                self._slot = None
            raise

    def __del__(self) -> None:
        # Never read and now unreachable: nobody can read the slot any more. Views handed out keep
        # the slot reserved until release() (they may outlive this object).
        slot = self._slot
        if slot is not None and not self._viewed:
            slot.reserved = False

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
