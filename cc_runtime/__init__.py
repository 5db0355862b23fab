"""cc_runtime: make LLM inference fast under NVIDIA Confidential Computing.

``import cc_runtime`` detects CC through NVML and, only when CC is on (or forced with
``CC_RUNTIME_CC=1``, or emulated with ``CC_RUNTIME_EMULATE=<profile>``), patches SGLang, FlashInfer,
Triton and torch inductor as they are imported. Off CC it changes nothing but one environment variable
(``CC_RUNTIME_BOOTSTRAP=1``) that lets spawned Python children make the same decision for themselves.
"""

from __future__ import annotations

import logging

from .detect import CCState, cc_state
from .runtime import activate, deactivate
from .settings import SettingsError

__version__ = "0.1.0"
__all__ = ["CCState", "SettingsError", "activate", "cc_state", "deactivate", "status", "__version__"]

logging.getLogger("cc_runtime").addHandler(logging.NullHandler())


def status() -> dict:
    """The same data as ``cc-runtime doctor --json``."""
    from .doctor import collect

    return collect()


def _auto() -> None:
    from .runtime import auto_activate

    auto_activate()


_auto()
