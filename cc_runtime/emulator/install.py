"""Installing the GPU emulator's hooks, and the process-wide switch (``enable``/``disable``/``emulate``).

Everything is installed through a :class:`~cc_runtime.patching.PatchContext`, so disabling restores
every patched object exactly. Refused when real CC is on (the costs would be counted twice).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from .bindings import install_refusals
from .charge import EmulationRefused, Emulator
from .dispatch_mode import calibrate_hook_overhead, make_mode_class, pop_mode_if_top, push_mode
from .profiles import Profile, load_profile
from .tensor_hooks import hook_copy_, hook_cuda, hook_d2h, hook_factory, hook_is_pinned, hook_to

log = logging.getLogger("cc_runtime.emulator")

__all__ = ["active", "check_allowed", "disable", "emulate", "enable", "install"]


def install(ctx: Any, profile: Profile | str | None, *, backend: Any = None, seed: int = 0,
            torch_module: ModuleType | None = None) -> Emulator:
    """Install every hook through ``ctx`` (a PatchContext) and return the active Emulator."""
    import torch

    tm = torch_module or torch
    em = Emulator(profile, backend, seed)
    if not em.profile.cc:
        raise EmulationRefused(f"profile {em.profile.name!r} is CC off: nothing to emulate")
    T = tm.Tensor
    ctx.replace(T, "to", hook_to(em, T.to))
    ctx.replace(T, "copy_", hook_copy_(em, T.copy_))
    ctx.replace(T, "cpu", hook_d2h(em, T.cpu, whole=True))
    ctx.replace(T, "tolist", hook_d2h(em, T.tolist, whole=True, dispatched=False))
    ctx.replace(T, "item", hook_d2h(em, T.item, whole=False))
    ctx.replace(T, "cuda", hook_cuda(em, T.cuda))
    if em.profile.pinned_reads_unpinned:
        ctx.replace(T, "is_pinned", hook_is_pinned(em, T.is_pinned))
    ctx.replace(tm, "tensor", hook_factory(em, tm.tensor, None))
    ctx.replace(tm, "as_tensor", hook_factory(em, tm.as_tensor, 1))

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

    install_refusals(ctx, em.profile, active=lambda: em.active, torch_cuda=tm.cuda,
                     discover=torch_module is None)
    mode_cls = make_mode_class()
    em.active = True  # calibrate the path a charged op takes (host tensors: nothing is charged)
    try:
        em.hook_overhead_s = calibrate_hook_overhead(em, mode_cls)
    finally:
        em.active = False
    orig_bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def _bootstrap_inner(thread: threading.Thread) -> None:
        if not em.active:
            return orig_bootstrap(thread)
        mode = mode_cls(em)
        push_mode(mode)
        try:
            return orig_bootstrap(thread)
        finally:
            pop_mode_if_top(mode)

    ctx.replace(threading.Thread, "_bootstrap_inner", _bootstrap_inner)
    here = mode_cls(em)
    push_mode(here)
    owner = threading.get_ident()

    def remove_mode() -> None:
        # Only the thread that pushed can pop; elsewhere the mode stays behind, inert (em inactive).
        if threading.get_ident() != owner or not pop_mode_if_top(here):
            log.info("cc_runtime emulator: launch-cost mode left inert on its thread's mode stack")

    ctx.on_revert(remove_mode)
    ctx.on_revert(lambda: setattr(em, "active", False))
    em.active = True
    log.info("cc_runtime emulator: CC %s emulated on %s (copies, launches, graph replays, events%s%s)",
             em.profile.name, em.device_type, ", host register" if em.profile.host_register_fails else "",
             ", multicast" if em.profile.multicast_unsupported else "")
    return em


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
