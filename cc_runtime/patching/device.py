"""Which device the serving engine in this process runs on, and the check every CUDA-only patch shares.

cc_runtime's fixes and the upstream CC switches it exports (``SGLANG_FORCE_CONFIDENTIAL_COMPUTE``) lead
to CUDA-only code: SGLang's async D2H worker calls ``Stream.synchronize()``, which ``torch.cpu.Stream``
does not have, and the emulator's dispatch hook costs time on every op even where there is no CUDA work
to charge. On another device such a patch is ``not applicable (device cpu)`` and the server runs as
plain SGLang does.

Where the device is read, first hit wins (nothing here imports SGLang or torch):

1. SGLang's own server arguments, where this process has already published them (0.5.23
   ``sglang.srt.runtime_context.get_server_args()``; the scheduler after ``run_scheduler_process``
   starts);
2. ``--device X`` / ``--device=X`` on the command line. ``sglang.launch_server`` takes it there, and a
   spawned scheduler or detokenizer sees the same ``sys.argv``: multiprocessing's spawn restores the
   parent's ``sys.argv`` before it imports the parent's main module (and with it SGLang), which is when
   cc_runtime's post-import patches apply;
3. ``SGLANG_USE_CPU_ENGINE=1``: SGLang then picks the CPU device itself when no device is given.

None of these: unknown, treated as CUDA (what every patch assumed before this check existed).
"""

from __future__ import annotations

import os
import sys

from .patch import NotApplicable

__all__ = ["NotApplicable", "device_from_args", "is_cuda_device", "require_cuda_device", "serving_device"]


def _from_server_args() -> str | None:
    ctx = sys.modules.get("sglang.srt.runtime_context")
    getter = getattr(ctx, "get_server_args", None)
    if getter is None:
        return None
    try:
        device = getattr(getter(), "device", None)
    except Exception:  # noqa: BLE001 - not published yet in this process
        return None
    return str(device) if device else None


def device_from_args(argv: list[str]) -> str | None:
    """The device type a ``--device`` in these arguments names (``cpu``, ``cuda``), else None."""
    device = _from_argv(list(argv))
    return device.split(":", 1)[0].lower() if device else None


def _from_argv(argv: list[str]) -> str | None:
    found = None
    for i, arg in enumerate(argv):
        if arg == "--device" and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith("--device="):
            found = arg.split("=", 1)[1]
    return found or None  # the last one wins, as with argparse


def serving_device(argv: list[str] | None = None) -> tuple[str | None, str]:
    """(device type such as ``cuda`` or ``cpu``, or None when unknown; where it was read)."""
    device = _from_server_args()
    if device:
        return device.split(":", 1)[0].lower(), "SGLang server args"
    device = _from_argv(list(sys.argv if argv is None else argv))
    if device:
        return device.split(":", 1)[0].lower(), "--device on the command line"
    if os.environ.get("SGLANG_USE_CPU_ENGINE", "").strip() == "1":
        return "cpu", "SGLANG_USE_CPU_ENGINE=1"
    return None, "unknown (treated as cuda)"


def is_cuda_device(argv: list[str] | None = None) -> bool:
    device, _ = serving_device(argv)
    return device is None or device == "cuda"


def require_cuda_device(argv: list[str] | None = None) -> None:
    """Raise :class:`NotApplicable` (``device cpu``) when the serving device is known and not CUDA.

    Call it first in a patch's ``apply`` (the manager already does for every ``Patch`` with
    ``needs_cuda_device``); the patch then ends ``not applicable`` with that reason, nothing changed."""
    device, _ = serving_device(argv)
    if device is not None and device != "cuda":
        raise NotApplicable(f"device {device}")
