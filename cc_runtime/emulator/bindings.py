"""CC's refusals through the CUDA bindings: host registration (error 801) and multicast objects.

Under CC ``cudaHostRegister`` / ``cuMemHostRegister`` fail with error 801 (NVIDIA R580 CC release notes
via vLLM issue 55428; NCCL likewise, nvtrust issue 57), and multicast objects cannot be created
(SGLang issue 30364: its ``cuMulticastGetGranularity`` preflight fails; vLLM issues 50179, 42324).
Code reaches these calls through several entry points, and each must fail the same way:

- ``torch.cuda.cudart().cudaHostRegister`` (torch's own cudart binding; returns a ``cudaError``),
- cuda-python's runtime binding ``cuda.bindings.runtime.cudaHostRegister`` (and the legacy
  ``cuda.cudart`` alias where installed): returns ``(cudaError_t,)``,
- cuda-python's driver binding ``cuda.bindings.driver``: ``cuMemHostRegister`` returns ``(CUresult,)``;
  ``cuMulticastCreate`` and ``cuMulticastGetGranularity`` return ``(CUresult, None)``.

Public API (used by the emulator's install and by anything that needs CC's refusals on a binding
module of its own, e.g. SGLang's host KV pools and allreduce preflight)::

    from cc_runtime.emulator.bindings import install_refusals
    install_refusals(ctx, profile)                      # every importable entry point above
    install_refusals(ctx, profile, driver=my_driver)    # or explicit binding modules

``ctx`` is a :class:`~cc_runtime.patching.PatchContext` (reverting it restores every object), or
``None`` to get back a list of ``(owner, name, original)`` to restore yourself. Each hook checks
``active()`` on every call, so an installed but inactive hook passes through to the real binding.
Nothing here imports torch or cuda-python at import time.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from .profiles import Profile

log = logging.getLogger("cc_runtime.emulator")

#: cudaErrorNotSupported and CUDA_ERROR_NOT_SUPPORTED share the value 801.
CUDA_ERROR_NOT_SUPPORTED = 801

__all__ = ["CUDA_ERROR_NOT_SUPPORTED", "HostRegisterRefusingCudart", "install_refusals", "refusing"]


def _enum(module: Any, enum_name: str, member: str) -> Any:
    """The binding's own error value (so ``err == cudaError_t.cudaErrorNotSupported`` holds), else 801."""
    enum = getattr(module, enum_name, None)
    value = getattr(enum, member, None) if enum is not None else None
    return value if value is not None else CUDA_ERROR_NOT_SUPPORTED


def refusing(original: Callable[..., Any], error: Any, extra: int, active: Callable[[], bool]) -> Callable[..., Any]:
    """A cuda-python-shaped function that returns ``(error, None * extra)`` while ``active()``."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        if not active():
            return original(*args, **kwargs)
        return (error,) + (None,) * extra

    refuse.__name__ = getattr(original, "__name__", "refuse")
    refuse.__doc__ = f"cc_runtime emulator: fails with {error!r} while CC is emulated.\n\n" + str(
        getattr(original, "__doc__", "") or "")
    refuse.__wrapped__ = original  # type: ignore[attr-defined]
    return refuse


class HostRegisterRefusingCudart:
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


def _import(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - not installed, or no libcuda: that entry point does not exist here
        return None


def install_refusals(ctx: Any, profile: Profile, *, active: Callable[[], bool] | None = None,
                     torch_cuda: Any = None, runtime: Any = None, driver: Any = None,
                     legacy_cudart: Any = None, discover: bool = True) -> list[tuple[Any, str, Any]]:
    """Make host registration and multicast creation fail on the given (or importable) bindings.

    Only what ``profile`` says fails is hooked (``host_register_fails``, ``multicast_unsupported``).
    ``discover``: also hook the entry points that import here (``torch.cuda`` only when torch is
    already imported: this must not pull torch in). Returns ``(owner, attribute, original)`` for each
    replaced attribute, in order."""
    import sys

    is_active = active or (lambda: True)
    if discover:
        if torch_cuda is None and "torch" in sys.modules:
            torch_cuda = getattr(sys.modules["torch"], "cuda", None)
        runtime = runtime if runtime is not None else _import("cuda.bindings.runtime")
        driver = driver if driver is not None else _import("cuda.bindings.driver")
        legacy_cudart = legacy_cudart if legacy_cudart is not None else _import("cuda.cudart")
    done: list[tuple[Any, str, Any]] = []

    def replace(owner: Any, name: str, new: Any) -> None:
        original = getattr(owner, name)
        if ctx is not None:
            ctx.replace(owner, name, new)
        else:
            setattr(owner, name, new)
        done.append((owner, name, original))

    if profile.host_register_fails:
        if torch_cuda is not None and hasattr(torch_cuda, "cudart"):
            orig_cudart = torch_cuda.cudart

            def cudart() -> Any:
                real = orig_cudart()
                return HostRegisterRefusingCudart(real) if is_active() else real

            replace(torch_cuda, "cudart", cudart)
        for mod in {id(m): m for m in (runtime, legacy_cudart) if m is not None}.values():
            if hasattr(mod, "cudaHostRegister"):
                err = _enum(mod, "cudaError_t", "cudaErrorNotSupported")
                replace(mod, "cudaHostRegister", refusing(mod.cudaHostRegister, err, 0, is_active))
        if driver is not None and hasattr(driver, "cuMemHostRegister"):
            err = _enum(driver, "CUresult", "CUDA_ERROR_NOT_SUPPORTED")
            replace(driver, "cuMemHostRegister", refusing(driver.cuMemHostRegister, err, 0, is_active))
    if profile.multicast_unsupported and driver is not None:
        err = _enum(driver, "CUresult", "CUDA_ERROR_NOT_SUPPORTED")
        for name in ("cuMulticastCreate", "cuMulticastGetGranularity"):
            if hasattr(driver, name):
                replace(driver, name, refusing(getattr(driver, name), err, 1, is_active))
    if done:
        log.debug("cc_runtime emulator: CC refusals on %s", ", ".join(f"{getattr(o, '__name__', o)}.{n}"
                                                                      for o, n, _ in done))
    return done
