"""``sglang.d2h_worker_blocking_waits`` against SGLang 0.5.23's REAL ``AsyncD2HCopyWorker``.

Runs only in the nox ``upstream-0.5.23`` session. Upstream's class, its ``submit``, its ``_loop`` thread
and its ``HostCopyDone`` are the real ones. Stand-in, only for what cannot exist on a CPU-only machine:
``torch.cuda`` (a CUDA stream or event cannot be made without a GPU) is :class:`CudaStandIn`, which
records every event it makes (with its ``blocking`` flag) and every wait: what the test asserts is
which waits upstream's own code performs, before the patch, with it, and after revert.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = [pytest.mark.upstream, pytest.mark.timeout(120)]

PATCH = "sglang.d2h_worker_blocking_waits"


class CudaStandIn:
    """Stands in for ``torch.cuda``: events and streams that log what is made and what is waited on."""

    __name__ = "torch.cuda"  # what the patch checks: only CUDA's waits spin

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()
        log, lock = self.log, self.lock

        class Event:
            def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
                self.blocking = blocking
                with lock:
                    log.append(("make event", blocking))

            def record(self, stream: Any = None) -> None:
                with lock:
                    log.append(("record", self.blocking, "stream" if stream is not None else "current"))

            def synchronize(self) -> None:
                with lock:
                    log.append(("event.synchronize", self.blocking))

        class Stream:
            def synchronize(self) -> None:
                with lock:
                    log.append(("stream.synchronize",))

        self.Event, self.Stream = Event, Stream

    def current_device(self) -> int:
        return 0

    def set_device(self, device: int) -> None:
        pass

    def stream(self, s: Any) -> Any:
        import contextlib

        return contextlib.nullcontext(s)

    def waits(self) -> list[tuple[Any, ...]]:
        return [e for e in self.log if e[0].endswith("synchronize")]


@pytest.fixture
def upstream(sglang_version: str) -> SimpleNamespace:
    if sglang_version != "0.5.23":
        pytest.skip("the patch targets SGLang 0.5.23's AsyncD2HCopyWorker")
    from sglang.srt.managers import async_d2h_copy_worker as mod

    return SimpleNamespace(mod=mod, cls=mod.AsyncD2HCopyWorker, init=mod.AsyncD2HCopyWorker.__dict__["__init__"])


def _one_copy(cls: Any, cuda: CudaStandIn) -> list[int]:
    worker = cls(cuda)
    out: list[int] = []
    try:
        done = worker.submit(lambda: out.append(7))
        done.synchronize()  # upstream's HostCopyDone: a threading.Event, set by the worker thread
    finally:
        worker.shutdown()
    return out


def test_as_shipped_upstream_waits_on_a_default_event_then_on_its_stream(upstream):
    """What the patch is for: 0.5.23 records a non-blocking (spin-wait) event and synchronizes the stream."""
    cuda = CudaStandIn()
    assert _one_copy(upstream.cls, cuda) == [7]
    assert ("make event", False) in cuda.log
    assert cuda.waits() == [("event.synchronize", False), ("stream.synchronize",)]


def test_with_the_patch_every_wait_is_on_a_blocking_event_and_revert_restores_the_class(upstream):
    from cc_runtime.patches.sglang_d2h_worker_waits import PATCHES
    from cc_runtime.patching import PatchContext

    ctx = PatchContext(PATCHES[0])
    PATCHES[0].apply(ctx)
    try:
        assert upstream.cls.__dict__["__init__"] is not upstream.init
        cuda = CudaStandIn()
        assert _one_copy(upstream.cls, cuda) == [7]
        made = [e for e in cuda.log if e[0] == "make event"]
        assert made and all(blocking for _, blocking in made), made
        # the readiness event, then the stream's completion as a blocking event recorded on that stream
        assert cuda.waits() == [("event.synchronize", True), ("event.synchronize", True)]
        assert ("record", True, "stream") in cuda.log
        assert ("stream.synchronize",) not in cuda.log
    finally:
        assert ctx.revert() == []
    assert upstream.cls.__dict__["__init__"] is upstream.init  # the same object, not a copy
    cuda = CudaStandIn()
    assert _one_copy(upstream.cls, cuda) == [7]
    assert cuda.waits() == [("event.synchronize", False), ("stream.synchronize",)]


def test_another_device_module_is_passed_through_untouched(upstream):
    from cc_runtime.patches.sglang_d2h_worker_waits import PATCHES
    from cc_runtime.patching import PatchContext

    class NotCuda(CudaStandIn):
        __name__ = "torch.npu"

    ctx = PatchContext(PATCHES[0])
    PATCHES[0].apply(ctx)
    try:
        other = NotCuda()
        assert _one_copy(upstream.cls, other) == [7]
        assert other.waits() == [("event.synchronize", False), ("stream.synchronize",)]
    finally:
        ctx.revert()


def test_through_the_manager_not_applicable_without_cuda_applied_with_it_and_deactivate_restores(
        upstream, monkeypatch):
    import cc_runtime
    from cc_runtime import runtime
    from cc_runtime.patches import sglang_d2h_worker_waits

    runtime._reset_for_tests()
    try:
        cc_runtime.activate(cc="1")  # this machine has no CUDA device: the patch's own check says so
        rec = runtime.manager().records[PATCH]
        assert rec.status == "not applicable", (rec.status, rec.reason)
        assert sglang_d2h_worker_waits.not_cuda_reason()
        runtime._reset_for_tests()
        # Stand-in for a CUDA machine: only the device check is replaced; the class is the real one.
        monkeypatch.setattr(sglang_d2h_worker_waits, "not_cuda_reason", lambda: None)
        cc_runtime.activate(cc="1")
        rec = runtime.manager().records[PATCH]
        assert rec.status == "applied", (rec.status, rec.reason)
        assert rec.patch.family == "sglang.readback"
        assert upstream.cls.__dict__["__init__"] is not upstream.init
        runtime.deactivate()
        assert upstream.cls.__dict__["__init__"] is upstream.init
    finally:
        runtime._reset_for_tests()


def test_the_peer_arm_builds_upstreams_worker_as_shipped_even_while_the_patch_is_active(upstream):
    """``bench readback``'s ``sglang_worker`` arm must show upstream's own waits beside the patched arm."""
    from cc_runtime.bench.readback_peer import build_worker
    from cc_runtime.patches.sglang_d2h_worker_waits import PATCHES
    from cc_runtime.patching import PatchContext

    ctx = PatchContext(PATCHES[0])
    PATCHES[0].apply(ctx)
    try:
        shipped, cuda = build_worker(upstream.mod, CudaStandIn(), blocking=False), None
        cuda = shipped.device_module
        done = shipped.submit(lambda: None)
        done.synchronize()
        shipped.shutdown()
        assert cuda.waits() == [("event.synchronize", False), ("stream.synchronize",)]
    finally:
        ctx.revert()
    fixed = build_worker(upstream.mod, CudaStandIn(), blocking=True)
    try:
        fixed.submit(lambda: None).synchronize()
        assert fixed.device_module._module.waits() == [("event.synchronize", True), ("event.synchronize", True)]
    finally:
        fixed.shutdown()
    assert upstream.cls.__dict__["__init__"] is upstream.init
