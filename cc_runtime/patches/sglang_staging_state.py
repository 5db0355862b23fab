"""Stagers by device for the SGLang staging patch (:mod:`.sglang_staging`), and the device a builder targets.

One :class:`~cc_runtime.staging.H2DStager` per device per process, shared by every wrapped builder; tests
bind a simulated device to a torch device name with :func:`bind`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("cc_runtime.patches.sglang_staging")


class _State:
    """Stagers by device (one per device per process), shared by every wrapped builder."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stagers: dict[str, Any] = {}
        self.failed: set[str] = set()

    def reset(self) -> None:
        with self.lock:
            self.stagers.clear()
            self.failed.clear()


STATE = _State()


def _key(device: Any) -> str | None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        return None
    if dev.type == "cuda" and dev.index is None:
        return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else None
    return str(dev)


def bind(device: Any, backend: Any) -> Any:
    """Use ``backend`` (a SimDevice stand-in, a device module) for copies to ``device``; returns the stager."""
    from ..staging import H2DStager

    key = _key(device)
    if key is None:
        raise ValueError(f"not a torch device: {device!r}")
    stager = H2DStager(backend, cc=True)
    with STATE.lock:
        STATE.stagers[key] = stager
        STATE.failed.discard(key)
    return stager


def stager_for(device: Any) -> Any:
    """The stager for ``device`` (made on first use), or None where staging does not apply."""
    key = _key(device)
    if key is None:
        return None
    stager = STATE.stagers.get(key)
    if stager is not None or key in STATE.failed or key == "cpu":
        return stager
    with STATE.lock:
        stager = STATE.stagers.get(key)
        if stager is None and key not in STATE.failed:
            try:
                from ..staging import H2DStager

                stager = H2DStager(key, cc=True)
                STATE.stagers[key] = stager
                log.info("cc_runtime: H2D input staging active on %s", key)
            except Exception as exc:  # noqa: BLE001 - no staging: upstream's own copies
                STATE.failed.add(key)
                log.warning("cc_runtime: H2D staging unavailable on %s (%s); SGLang copies inputs itself",
                            key, exc)
    return stager


def _targets(key: str) -> Any:
    def is_target(device: Any) -> bool:
        return _key(device) == key

    return is_target


def _device_of(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # A classmethod's instance is the class: its ``device`` is a dataclass default, not this batch's.
    dev = None if isinstance(instance, type) else getattr(instance, "device", None)
    if dev is None:  # ForwardBatch.init_new(batch, model_runner) / resolve_forward_inputs(batch, ...)
        for a in (*args, *kwargs.values()):
            dev = getattr(a, "device", None)
            if dev is not None and not callable(dev):
                break
    return dev


def _safe_stager(device: Any) -> Any:
    try:
        return stager_for(device)
    except Exception:  # noqa: BLE001
        return None
