"""cc_runtime: make LLM inference fast under NVIDIA Confidential Computing.

``import cc_runtime`` validates every ``CC_RUNTIME_*`` setting, detects CC through NVML (or inherits
the decision its parent process exported) and, only when CC is on (or forced with ``CC_RUNTIME_CC=1``,
or emulated with ``CC_RUNTIME_EMULATE=<profile>``), patches SGLang, FlashInfer, Triton and torch
inductor as they are imported, and sets ``CC_RUNTIME_BOOTSTRAP=1`` so spawned Python children are
patched too. Off CC it changes nothing (no patch, no exported variable); with an invalid setting it
prints one line and changes nothing at all.

Kept cheap on purpose: off CC this imports only ``cc_runtime.settings`` (with its value checks,
``settings_checks``) and ``cc_runtime.runtime`` (and ``detect`` with nvidia-ml-py when NVML must be
asked); everything else loads on first use.
"""

from __future__ import annotations

from .runtime import activate, deactivate
from .settings import SettingsError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from .detect import CCState

__version__ = "0.1.0"
__all__ = ["CCState", "SettingsError", "activate", "cc_state", "deactivate", "status", "__version__"]


def cc_state() -> CCState:
    """What cc_runtime believes about CC in this process (see :class:`cc_runtime.detect.CCState`)."""
    from .detect import cc_state as _cc_state

    return _cc_state()


def status() -> dict:
    """The same data as ``cc-runtime doctor --json``."""
    from .doctor import collect

    return collect()


def __getattr__(name: str) -> object:
    if name == "CCState":
        from .detect import CCState

        return CCState
    raise AttributeError(f"module 'cc_runtime' has no attribute {name!r}")


def _auto() -> None:
    from .runtime import auto_activate

    try:
        auto_activate()
    except Exception as exc:
        if getattr(exc, "cc_runtime_refused", False):
            # CC_RUNTIME_PREFLIGHT=require refused (rolled back, one line printed): end the process. An
            # exception would not: SGLang's plugin loader and many launchers log it and carry on.
            raise SystemExit(1) from None
        raise


_auto()
