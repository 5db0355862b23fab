"""CC's costs and semantics on a real CUDA GPU that is not in CC mode ("emulated" results).

While emulation is active, in every thread of the process:

- **Host<->device copies made through torch** (``Tensor.to``, ``.copy_``, ``.cpu()``, ``.cuda()``,
  ``.item()``, ``.tolist()``, ``torch.tensor(data, device=)``, ``torch.as_tensor``, and in threads
  with the launch mode any ``aten._to_copy``/``copy_`` across devices; ``non_blocking`` or not) become host-synchronous as CC makes them: the
  calling thread waits for the current stream's earlier work, makes the copy, waits for it, then pays
  ``profile.copy_cost_s(nbytes)`` on the CPU. So the modelled copy time is the CC-off copy plus the
  profile's cost (the simulated device uses the same model). The cost is a calibrated GIL-releasing
  wait, not real AES-GCM: see :mod:`.clock` for why.
- **Eager kernel launches** pay ``profile.launch_extra_s``. The hook is a ``TorchDispatchMode`` (it sees
  every aten and custom op that reaches the dispatcher with a device tensor; views and allocations
  launch nothing and are not charged). Dispatch modes are thread-local, so the mode is pushed in the
  thread that enables emulation and, through a wrapper on ``threading.Thread._bootstrap_inner``, in
  every thread started afterwards. The hook's own per-op Python cost (measured at install on host
  tensors, ``Emulator.hook_overhead_s``) counts toward the extra launch cost instead of adding to it;
  where the hook alone costs more than the profile's extra, the emulated launch costs more than
  the model (the bench reports ``launch_hook_overhead_us``).
  Limitations: threads started *before* emulation was enabled (in other threads) are not charged for
  launches (their copies still are: copy hooks are global); kernels launched without the dispatcher
  (Triton JIT kernels, CUDA graphs' nodes, inductor's generated launches) are not charged per launch;
  the mode declares ``ignore_compile_internals`` so ``torch.compile`` still compiles.
- **CUDA graph replay** (``torch.cuda.CUDAGraph.replay``) pays ``profile.graph_replay_extra_s`` once.
- **Event timing**: ``torch.cuda.Event.elapsed_time`` results are corrupted per the profile (seeded,
  some negative). ``torch.Event`` (the device-generic C type) cannot be patched and is not corrupted.
- **Host registration**: ``torch.cuda.cudart().cudaHostRegister`` returns error 801 (not supported),
  as the R580 CC release notes say. ``pin_memory()`` keeps working, as it does under real CC
  (``cudaHostAlloc`` is allowed; it just buys nothing because copies go through the bounce buffer).

While a torch-function mode is active in a thread that has the launch mode, the method hooks leave
copies to the dispatcher (``Emulator.charged_at_dispatch``): the mode may answer a ``.to("cpu")``
without copying (cc_runtime's coalescing readback), and only copies that happen may be charged.
Copies made during CUDA-graph capture are passed through untouched (a host sync is illegal there).
Refused when real CC is on (the costs would be counted twice). Everything is installed through a
:class:`~cc_runtime.patching.PatchContext`, so disabling restores every patched object exactly.
The CPU-side logic (what gets charged, the blocking order) runs against any ``backend`` object with
``device_type``, ``current_stream(device)``, ``is_capturing()`` and ``default_device(index)``; the
tests use the meta device with a simulated stream as a stand-in for CUDA.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from .clock import wait_s, wait_until
from .events import EventCorruption
from .profiles import Profile, load_profile

log = logging.getLogger("cc_runtime.emulator")
perf_counter = time.perf_counter

__all__ = ["CudaBackend", "StandInBackend", "EmulationRefused", "Emulator", "active", "disable", "emulate", "enable", "install"]

CUDA_ERROR_NOT_SUPPORTED = 801


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

    def __repr__(self) -> str:
        return f"<Emulator {self.profile.label} on {self.device_type} active={self.active}>"

    def is_dev(self, device: Any) -> bool:
        return device is not None and getattr(device, "type", None) == self.device_type

    def in_copy(self) -> bool:
        return bool(getattr(self._local, "depth", 0))

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def copy(self, direction: str, nbytes: int | None, device: Any, do: Callable[[], Any],
             started: float | None = None) -> Any:
        """Run ``do()`` (the real copy) the way CC would: host-synchronous, then the CPU-side cost.

        ``nbytes`` None: the size of the tensor ``do()`` returns (factories with host data).
        ``started``: when the hook was entered; the hook's own overhead (not the wait for earlier
        work, not the copy) is credited against the charge, so the model holds at small sizes too."""
        if not self.active or self.in_copy() or self.backend.is_capturing():
            return do()
        loc = self._local
        loc.depth = getattr(loc, "depth", 0) + 1
        try:
            if direction == "d2d":
                out = do()  # device-side copy: no host sync, only the extra submission cost
                wait_s(self.profile.d2d_extra_s)
            else:
                t_pre = time.perf_counter()
                credit = t_pre - started if started is not None else 0.0
                stream = self.backend.current_stream(device)
                if stream.query():
                    credit += time.perf_counter() - t_pre
                else:
                    stream.synchronize()  # the stream's earlier work first, as the CC bounce copy does
                out = do()
                stream.synchronize()  # the copy itself is done before the call returns
                if nbytes is None:
                    nbytes = _nbytes(out)
                wait_s(self.profile.copy_cost_s(nbytes, direction) - credit)
        finally:
            loc.depth -= 1
        self._count(direction)
        self._count(f"bytes_{direction}", nbytes or 0)
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
        wait_until(started + self.profile.launch_extra_s - self.hook_overhead_s)
        self._count("launches")

    def replay(self) -> None:
        wait_s(self.profile.graph_replay_extra_s)
        self._count("graph_replays")

    def elapsed_time(self, ms: float) -> float:
        self._count("event_readings")
        return self.event_corruption.corrupt(ms)


def _nbytes(t: Any) -> int:
    try:
        return int(t.numel() * t.element_size())
    except Exception:  # noqa: BLE001 - a tensor-like without sizes costs the fixed part only
        return 0


# -- tensor method hooks (global: attribute lookups happen in every thread) ------------------------

def _hook_to(em: Emulator, orig: Callable[..., Any]) -> Callable[..., Any]:
    import torch

    parse_to = torch._C._nn._parse_to
    is_compiling = torch.compiler.is_compiling
    tf_mode = torch._C._is_torch_function_mode_enabled

    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        if is_compiling() or not em.active or not (args or kwargs) or (tf_mode() and em.charged_at_dispatch()):
            return orig(self, *args, **kwargs)
        started = perf_counter()
        try:
            target = parse_to(*args, **kwargs)[0]
        except Exception:  # noqa: BLE001 - let torch raise its own error for bad arguments
            return orig(self, *args, **kwargs)
        src_dev, dst_dev = em.is_dev(self.device), em.is_dev(target)
        if target is None or src_dev == dst_dev:
            return orig(self, *args, **kwargs)
        direction, dev = ("h2d", target) if dst_dev else ("d2h", self.device)
        return em.copy(direction, _nbytes(self), dev, lambda: orig(self, *args, **kwargs), started)

    return to


def _hook_copy_(em: Emulator, orig: Callable[..., Any]) -> Callable[..., Any]:
    import torch

    is_compiling = torch.compiler.is_compiling
    tf_mode = torch._C._is_torch_function_mode_enabled

    def copy_(self: Any, src: Any, *args: Any, **kwargs: Any) -> Any:
        if is_compiling() or not em.active or (tf_mode() and em.charged_at_dispatch()):
            return orig(self, src, *args, **kwargs)
        started = perf_counter()
        dst_dev, src_dev = em.is_dev(self.device), em.is_dev(getattr(src, "device", None))
        if not (dst_dev or src_dev):
            return orig(self, src, *args, **kwargs)
        direction = "d2d" if dst_dev and src_dev else ("h2d" if dst_dev else "d2h")
        dev = self.device if dst_dev else src.device
        return em.copy(direction, _nbytes(src), dev, lambda: orig(self, src, *args, **kwargs), started)

    return copy_


def _hook_d2h(em: Emulator, orig: Callable[..., Any], whole: bool, dispatched: bool = True) -> Callable[..., Any]:
    """``cpu()``, ``tolist()`` (whole tensor) and ``item()`` (one element) read device memory back.

    ``dispatched``: the read reaches the dispatcher as a copy op the launch mode charges."""
    import torch

    is_compiling = torch.compiler.is_compiling
    tf_mode = torch._C._is_torch_function_mode_enabled

    def d2h(self: Any, *args: Any, **kwargs: Any) -> Any:
        if is_compiling() or not em.active or not em.is_dev(self.device) \
                or (dispatched and tf_mode() and em.charged_at_dispatch()):
            return orig(self, *args, **kwargs)
        started = perf_counter()
        nbytes = _nbytes(self) if whole else int(self.element_size())
        return em.copy("d2h", nbytes, self.device, lambda: orig(self, *args, **kwargs), started)

    d2h.__name__ = getattr(orig, "__name__", "d2h")
    return d2h


def _hook_cuda(em: Emulator, orig: Callable[..., Any]) -> Callable[..., Any]:
    import torch

    is_compiling = torch.compiler.is_compiling
    tf_mode = torch._C._is_torch_function_mode_enabled

    def cuda(self: Any, device: Any = None, *args: Any, **kwargs: Any) -> Any:
        if is_compiling() or not em.active or em.is_dev(self.device) or (tf_mode() and em.charged_at_dispatch()):
            return orig(self, device, *args, **kwargs)
        started = perf_counter()
        target = em.backend.default_device(device)
        return em.copy("h2d", _nbytes(self), target, lambda: orig(self, device, *args, **kwargs), started)

    return cuda


def _hook_factory(em: Emulator, orig: Callable[..., Any], device_pos: int | None) -> Callable[..., Any]:
    """``torch.tensor(data, device=...)`` / ``torch.as_tensor``: the H2D copy happens inside C++ with
    the Python dispatch key excluded, so neither the dispatch mode nor the method hooks see it."""
    import torch

    is_compiling = torch.compiler.is_compiling
    Tensor = torch.Tensor

    def factory(data: Any, *args: Any, **kwargs: Any) -> Any:
        if is_compiling() or not em.active:
            return orig(data, *args, **kwargs)
        started = perf_counter()
        device = kwargs.get("device")
        if device is None and device_pos is not None and len(args) > device_pos:
            device = args[device_pos]
        if device is None:
            return orig(data, *args, **kwargs)
        try:
            device = torch.device(device)
        except Exception:  # noqa: BLE001 - torch raises its own error below
            return orig(data, *args, **kwargs)
        if not em.is_dev(device) or (isinstance(data, Tensor) and em.is_dev(data.device)):
            return orig(data, *args, **kwargs)
        return em.copy("h2d", None, device, lambda: orig(data, *args, **kwargs), started)

    factory.__name__ = getattr(orig, "__name__", "factory")
    factory.__doc__ = getattr(orig, "__doc__", None)
    return factory


# -- launch hook: a dispatch mode per thread -----------------------------------------------------

_NO_KERNEL = (
    "empty.memory_format", "empty_strided.default", "empty_like.default", "detach.default", "alias.default",
    "lift_fresh.default", "resize_.default", "set_.source_Storage_storage_offset", "set_.source_Storage",
    "set_.source_Tensor", "is_same_size.default", "record_stream.default", "sym_size.int", "sym_stride.int",
    "sym_numel.default", "sym_storage_offset.default", "_reshape_alias.default", "as_strided.default",
    "view.default", "_unsafe_view.default", "new_empty.default", "new_empty_strided.default",
)
_COPY_OPS = ("copy_.default", "_to_copy.default", "_local_scalar_dense.default")


def _make_mode_class() -> type:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    def op(name: str) -> Any:
        packet, _, overload = name.partition(".")
        try:
            return getattr(getattr(torch.ops.aten, packet), overload)
        except AttributeError:
            return None

    no_kernel = {o for o in map(op, _NO_KERNEL) if o is not None}
    copy_ops = {o: n.split(".")[0] for n in _COPY_OPS if (o := op(n)) is not None}
    Tensor = torch.Tensor

    class CCLaunchCostMode(TorchDispatchMode):
        """Charges CC's extra launch cost per eager op on a device tensor (cc_runtime emulator)."""

        def __init__(self, emulator: Emulator) -> None:
            super().__init__()
            self.emulator = emulator

        @classmethod
        def ignore_compile_internals(cls) -> bool:
            return True  # let torch.compile compile; its graphs run without per-op charges

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            em = self.emulator
            if not em.active or em.in_copy() or func in no_kernel or func.is_view:
                return func(*args, **kwargs)
            started = time.perf_counter()
            kind = copy_ops.get(func)
            if kind is not None:
                return self._copy(kind, func, args, kwargs, started)
            if _touches_device(em, args, kwargs, Tensor):
                em.launch(started)
            return func(*args, **kwargs)

        def _copy(self, kind: str, func: Any, args: Any, kwargs: Any, started: float) -> Any:
            # Copies that bypassed the tensor-method hooks (torch.tensor(..., device=), C++ callers).
            em = self.emulator
            src = args[1] if kind == "copy_" else args[0]
            src_dev = em.is_dev(getattr(src, "device", None))
            if kind == "copy_":
                dst_dev = em.is_dev(args[0].device)
            elif kind == "_to_copy":
                dst_dev = em.is_dev(kwargs.get("device") or src.device)
            else:  # _local_scalar_dense: .item() and friends read one element back
                if not src_dev:
                    return func(*args, **kwargs)
                return em.copy("d2h", int(src.element_size()), src.device, lambda: func(*args, **kwargs),
                               started)
            if src_dev == dst_dev:
                if src_dev:
                    em.launch(time.perf_counter())
                return func(*args, **kwargs)
            direction = "h2d" if dst_dev else "d2h"
            dev = (kwargs.get("device") or args[0].device) if dst_dev else src.device
            return em.copy(direction, _nbytes(src), dev, lambda: func(*args, **kwargs), started)

    return CCLaunchCostMode


def _touches_device(em: Emulator, args: Any, kwargs: Any, tensor_type: Any) -> bool:
    for a in args:
        if isinstance(a, tensor_type):
            if em.is_dev(a.device):
                return True
        elif isinstance(a, (list, tuple)) and a and isinstance(a[0], tensor_type):
            if em.is_dev(a[0].device):
                return True
    dev = kwargs.get("device")
    if dev is not None:
        import torch

        return em.is_dev(torch.device(dev) if isinstance(dev, (str, int)) else dev)
    for v in kwargs.values():
        if isinstance(v, tensor_type) and em.is_dev(v.device):
            return True
    return False


def _calibrate_hook_overhead(em: Emulator, mode_cls: type) -> float:
    """Per-op cost of the launch mode on an uncharged (host) op: mode minus no mode, best of 3."""
    import torch

    x = torch.zeros(1)

    def per_op(n: int = 300) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            x.add_(1)
        return (time.perf_counter() - t0) / n

    base = min(per_op() for _ in range(3))
    mode = mode_cls(em)
    _push_mode(mode)
    try:
        with_mode = min(per_op() for _ in range(3))
    finally:
        _pop_mode_if_top(mode)
    return max(0.0, with_mode - base)


def _push_mode(mode: Any) -> None:
    import torch

    torch._C._push_on_torch_dispatch_stack(mode)


def _pop_mode_if_top(mode: Any) -> bool:
    import torch

    n = torch._C._len_torch_dispatch_stack()
    if n and torch._C._get_dispatch_stack_at(n - 1) is mode:
        torch._C._pop_torch_dispatch_stack(None)
        return True
    return False


# -- installation --------------------------------------------------------------------------------

class _HostRegisterRefusingCudart:
    """``torch.cuda.cudart()`` as CC leaves it: ``cudaHostRegister`` fails with error 801."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def cudaHostRegister(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - CUDA's name
        err = getattr(self._real, "cudaError", None)
        try:
            return err(CUDA_ERROR_NOT_SUPPORTED) if err is not None else CUDA_ERROR_NOT_SUPPORTED
        except Exception:  # noqa: BLE001 - an enum that refuses unlisted values
            return CUDA_ERROR_NOT_SUPPORTED

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def install(ctx: Any, profile: Profile | str | None, *, backend: Any = None, seed: int = 0,
            torch_module: ModuleType | None = None) -> Emulator:
    """Install every hook through ``ctx`` (a PatchContext) and return the active Emulator."""
    import torch

    tm = torch_module or torch
    em = Emulator(profile, backend, seed)
    if not em.profile.cc:
        raise EmulationRefused(f"profile {em.profile.name!r} is CC off: nothing to emulate")
    T = tm.Tensor
    ctx.replace(T, "to", _hook_to(em, T.to))
    ctx.replace(T, "copy_", _hook_copy_(em, T.copy_))
    ctx.replace(T, "cpu", _hook_d2h(em, T.cpu, whole=True))
    ctx.replace(T, "tolist", _hook_d2h(em, T.tolist, whole=True, dispatched=False))
    ctx.replace(T, "item", _hook_d2h(em, T.item, whole=False))
    ctx.replace(T, "cuda", _hook_cuda(em, T.cuda))
    ctx.replace(tm, "tensor", _hook_factory(em, tm.tensor, None))
    ctx.replace(tm, "as_tensor", _hook_factory(em, tm.as_tensor, 1))

    event_cls = tm.cuda.Event
    orig_elapsed = event_cls.elapsed_time

    def elapsed_time(self: Any, end_event: Any) -> float:
        ms = orig_elapsed(self, end_event)
        return em.elapsed_time(ms) if em.active else ms

    ctx.replace(event_cls, "elapsed_time", elapsed_time)

    graph_cls = getattr(tm.cuda, "CUDAGraph", None)
    if graph_cls is not None and hasattr(graph_cls, "replay"):
        orig_replay = graph_cls.replay

        def replay(self: Any, *args: Any, **kwargs: Any) -> Any:
            if em.active:
                em.replay()
            return orig_replay(self, *args, **kwargs)

        ctx.replace(graph_cls, "replay", replay)

    if em.profile.host_register_fails:
        orig_cudart = tm.cuda.cudart

        def cudart() -> Any:
            real = orig_cudart()
            return _HostRegisterRefusingCudart(real) if em.active else real

        ctx.replace(tm.cuda, "cudart", cudart)

    mode_cls = _make_mode_class()
    em.active = True  # calibrate the path a charged op takes (host tensors: nothing is charged)
    try:
        em.hook_overhead_s = _calibrate_hook_overhead(em, mode_cls)
    finally:
        em.active = False
    orig_bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def _bootstrap_inner(thread: threading.Thread) -> None:
        if not em.active:
            return orig_bootstrap(thread)
        mode = mode_cls(em)
        _push_mode(mode)
        try:
            return orig_bootstrap(thread)
        finally:
            _pop_mode_if_top(mode)

    ctx.replace(threading.Thread, "_bootstrap_inner", _bootstrap_inner)
    here = mode_cls(em)
    _push_mode(here)
    owner = threading.get_ident()

    def remove_mode() -> None:
        # Only the thread that pushed can pop; elsewhere the mode stays behind, inert (em inactive).
        if threading.get_ident() != owner or not _pop_mode_if_top(here):
            log.info("cc_runtime emulator: launch-cost mode left inert on its thread's mode stack")

    ctx.on_revert(remove_mode)
    ctx.on_revert(lambda: setattr(em, "active", False))
    em.active = True
    log.info("cc_runtime emulator: CC %s emulated on %s (copies, launches, graph replays, events%s)",
             em.profile.name, em.device_type, ", host register" if em.profile.host_register_fails else "")
    return em


# -- public switch -------------------------------------------------------------------------------

_lock = threading.RLock()
_current: tuple[Emulator, Any, Any] | None = None  # (emulator, PatchContext, previous detect state)


def active() -> Emulator | None:
    """The emulator installed by ``enable``/``emulate`` or by ``CC_RUNTIME_EMULATE``, if any."""
    with _lock:
        if _current is not None:
            return _current[0]
    return _from_patch_manager()


def _from_patch_manager() -> Emulator | None:
    import sys

    mod = sys.modules.get("cc_runtime.patches.emulation")
    return getattr(mod, "EMULATOR", None) if mod is not None else None


def check_allowed(pynvml: ModuleType | None = None) -> None:
    """Raise EmulationRefused when NVML says real CC is on (the costs would be counted twice)."""
    from .. import detect

    state = detect.cc_state()
    if not state.real:
        state = detect.probe_nvml(pynvml)
    if state.real:
        raise EmulationRefused(f"CC emulation refused: real CC is on ({state.reason}); the emulated costs "
                               "would come on top of the real ones. Unset CC_RUNTIME_EMULATE.")


def enable(profile: Profile | str | None = "h100", *, seed: int = 0, backend: Any = None,
           pynvml: ModuleType | None = None) -> Emulator:
    """Turn emulation on process-wide until ``disable()``. Raises EmulationRefused when not allowed."""
    from .. import detect
    from ..detect import CCState
    from ..patching import Patch, PatchContext

    global _current
    with _lock:
        prof = load_profile(profile)
        existing = active()
        if existing is not None and existing.active:
            raise EmulationRefused(f"CC emulation with profile {existing.profile.name!r} is already active; "
                                   "disable it first")
        check_allowed(pynvml)
        if backend is None:
            import torch

            if torch.version.cuda is None:
                raise EmulationRefused("CC emulation on a GPU needs a CUDA build of torch; on CPU-only "
                                       "machines use cc_runtime.emulator.SimDevice (simulated)")
        ctx = PatchContext(Patch(name="emulation", target="torch", versions="", summary="CC emulator",
                                 upstream="", apply=lambda c: None, module="torch"))
        try:
            em = install(ctx, prof, backend=backend, seed=seed)
        except BaseException:
            ctx.revert()
            raise
        previous = detect.cc_state()
        detect.set_state(CCState(True, "emulated", f"cc_runtime.emulator.enable({prof.name!r})",
                                 mode="emulated", profile=prof.name))
        _current = (em, ctx, previous)
        return em


def disable() -> None:
    """Undo ``enable``: every patched object restored, the previous CC state back."""
    from .. import detect

    global _current
    with _lock:
        if _current is None:
            return
        em, ctx, previous = _current
        _current = None
        errors = ctx.revert()
        detect.set_state(previous)
        for err in errors:
            log.error("cc_runtime emulator: error while reverting: %s", err)


@contextlib.contextmanager
def emulate(profile: Profile | str | None = "h100", *, seed: int = 0, backend: Any = None,
            pynvml: ModuleType | None = None) -> Iterator[Emulator]:
    """``with emulate("h100"):`` CC's costs and semantics on this GPU, for the block's duration."""
    em = enable(profile, seed=seed, backend=backend, pynvml=pynvml)
    try:
        yield em
    finally:
        disable()
