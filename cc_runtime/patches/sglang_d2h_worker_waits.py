"""SGLang 0.5.23's own readback worker waits on blocking-sync CUDA events instead of spinning a core.

Why: 0.5.23 ships ``AsyncD2HCopyWorker`` (cc_runtime keeps it on that release and adds coalescing,
``sglang.readback_coalesce``). Per step it records a default CUDA event on the caller's stream and its
thread waits with ``Event.synchronize()``, then ``d2h_copy_stream.synchronize()``. Under CUDA's default
scheduling (``cudaDeviceScheduleAuto``: spin while the process has fewer active contexts than cores,
which a one-GPU server always has) both waits spin, so one core stays busy for the whole forward pass,
every decode step. Confidential VMs are often short of vCPUs; cc_runtime's own worker waits on blocking
events (``cc_runtime.readback.backend``).

How: ``AsyncD2HCopyWorker.__init__`` is wrapped so that a worker on ``torch.cuda`` gets a view of that
module in which ``Event()`` makes ``blocking=True`` events and ``Stream()`` makes streams whose
``synchronize()`` records a blocking event on the stream and waits on it (the same completion point:
everything queued on the stream so far, as ``cudaStreamSynchronize``). Upstream's own code does the rest
unchanged: its queue, its private stream, its error hand-off. Any other device module (CPU, NPU, the
simulated device) is passed through untouched.

Applicability: only with a CUDA device (:func:`not_cuda_reason`, the one place that decides it; a
CPU-device SGLang server is "not applicable"). Revert restores the class's original ``__init__``; a
worker built while the patch was active keeps its blocking waits (its device view was chosen when it
was built), which is the same behaviour, never a half state.

Upstream: propose ``Event(blocking=True)`` and an event wait in place of the stream synchronize in
``async_d2h_copy_worker.py``; then ``upstream_has_it`` sees it and this patch steps aside.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

from ..patching import Patch, PatchContext

WORKER_MODULE = "sglang.srt.managers.async_d2h_copy_worker"


def not_cuda_reason() -> str | None:
    """Why this process has no CUDA device for SGLang's worker to wait on, or None if it has one.

    Cheap at activation (no torch import): torch's own answer once torch is loaded, else whether a GPU
    can be visible at all."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            available = bool(torch.cuda.is_available())
        except Exception:  # noqa: BLE001 - a broken CUDA setup is no CUDA device
            available = False
        return None if available else "torch sees no CUDA device (the worker's waits are CUDA events)"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES hides every GPU"
    if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")):
        return "no NVIDIA driver on this machine"
    return None


def _wanted(state: Any) -> bool:
    return bool(state.enabled) and not_cuda_reason() is None


def is_cuda_module(module: Any) -> bool:
    return getattr(module, "__name__", None) == "torch.cuda"


class BlockingWaits:
    """A device module as upstream's worker sees it after the patch: blocking events and stream waits."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def Stream(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - torch's name
        """The module's own stream; only its ``synchronize()`` (on this object) waits on a blocking event."""
        stream = self._module.Stream(*args, **kwargs)
        event = self.Event

        def synchronize() -> None:
            done = event()
            done.record(stream)
            done.synchronize()  # sleeps until everything queued on the stream so far has run

        stream.synchronize = synchronize
        return stream

    def Event(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - torch's name
        if len(args) >= 2:  # Event(enable_timing, blocking, ...): positional blocking is overridden too
            args = (args[0], True, *args[2:])
        else:
            kwargs["blocking"] = True
        return self._module.Event(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def __repr__(self) -> str:
        return f"BlockingWaits({self._module!r})"


def _init_with_blocking_waits(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if args:
        module, rest = args[0], args[1:]
    else:
        module, rest = kwargs.pop("device_module", None), ()
    if is_cuda_module(module):
        module = BlockingWaits(module)
    return wrapped(module, *rest, **kwargs)


def _upstream_blocks() -> str | None:
    mod = sys.modules.get(WORKER_MODULE)
    worker = getattr(mod, "AsyncD2HCopyWorker", None)
    if worker is None:
        return None
    try:
        submit, loop = inspect.getsource(worker.submit), inspect.getsource(worker._loop)
    except (OSError, TypeError, AttributeError):
        return None
    if "blocking=True" in submit and "stream.synchronize()" not in loop:
        return "SGLang's AsyncD2HCopyWorker already waits on blocking events"
    return None


def _apply(ctx: PatchContext) -> None:
    mod = sys.modules.get(WORKER_MODULE)
    if mod is None:
        import importlib

        mod = importlib.import_module(WORKER_MODULE)
    worker = getattr(mod, "AsyncD2HCopyWorker", None)
    if worker is None or not callable(getattr(worker, "_loop", None)):
        raise RuntimeError("sglang AsyncD2HCopyWorker._loop not found (0.5.23 patch point moved)")
    params = list(inspect.signature(worker.__init__).parameters)
    if params[1:2] != ["device_module"]:
        raise RuntimeError(f"AsyncD2HCopyWorker.__init__{params} has an unexpected signature")
    ctx.wrap(worker, "__init__", _init_with_blocking_waits)


PATCHES = [
    Patch(
        name="sglang.d2h_worker_blocking_waits",
        family="sglang.readback",  # beside sglang.readback_coalesce on 0.5.23; 0.5.12's worker is ours
        target="sglang",
        versions=">=0.5.23,<0.5.24",
        summary="SGLang's AsyncD2HCopyWorker waits on blocking-sync CUDA events, not spinning a core per step",
        upstream="none (0.5.23's worker spin-waits on a default event, then on its stream)",
        apply=_apply,
        module=WORKER_MODULE,
        upstream_has_it=_upstream_blocks,
        when=_wanted,
        why="a spinning readback thread holds one vCPU for every forward pass; CC VMs are short of vCPUs",
    ),
]
