"""The contract every cc_runtime patch fulfils, and the undo log that makes patches all-or-nothing.

Modelled on OpenTelemetry's instrumentors and vllm-ascend's patch notes: each patch says why it exists,
which distribution and version range it targets, the upstream PR that would make it unnecessary, how
to tell that upstream already has it, and how to apply it. Reverting is not written by hand: a patch
changes things only through :class:`PatchContext`, which records every change so that revert restores
the original objects exactly (the same objects, not copies) in reverse order.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..detect import CCState
    from .evidence import Evidence

log = logging.getLogger("cc_runtime.patching")

_MISSING = object()


class NotApplicable(Exception):  # noqa: N818 - a verdict, not an error: the patch ends "not applicable"
    """Raised by ``apply`` (before changing anything) when this process cannot take the patch although
    its target is installed in range: the emulator's CUDA hooks on a CPU-only torch build, or ``device
    cpu`` from :func:`cc_runtime.patching.device.require_cuda_device`. The patch reads ``not
    applicable`` with this message as its reason, as for a target not installed."""


def _cc_enabled(state: CCState) -> bool:
    return state.enabled


@dataclass(frozen=True)
class Patch:
    """One change to one upstream library.

    ``module``: the import whose completion triggers ``apply`` (a post-import hook, so import order
    does not matter); ``None`` applies at activation (environment switches that must be set before the
    target reads them). ``versions`` is a PEP 440 specifier on the ``target`` distribution.
    ``upstream_has_it`` returns a reason when the installed upstream already does this (then the patch
    is skipped as "upstream"), else None. ``when`` decides from the CC state whether the patch is wanted.
    ``opt_in``: applies only when named exactly in ``CC_RUNTIME_PATCHES`` (experimental patches).
    """

    name: str
    target: str
    versions: str
    summary: str
    upstream: str
    apply: Callable[[PatchContext], None]
    module: str | None = None
    fixed_in: str | None = None
    upstream_has_it: Callable[[], str | None] | None = None
    when: Callable[[CCState], bool] = field(default=_cc_enabled)
    why: str = ""
    #: Version-specific variants of one fix share a family (default: the target distribution). A patch
    #: outside its range is "not applicable" when a family member covers the installed version, and
    #: "skipped" (a strict-mode failure) when none does.
    family: str | None = None
    #: What the patch has been verified against (real upstream on CPU, GPU, CC hardware); None: the
    #: project's record in :mod:`cc_runtime.patching.evidence`.
    evidence: Evidence | None = None
    #: Experimental patches apply only when named exactly in CC_RUNTIME_PATCHES (not by '*' or a prefix).
    opt_in: bool = False
    #: The patch leads to CUDA-only code: on a known non-CUDA serving device it is "not applicable
    #: (device cpu)" (:mod:`cc_runtime.patching.device`). None: True for patches of SGLang.
    needs_cuda_device: bool | None = None

    def cuda_only(self) -> bool:
        return self.target == "sglang" if self.needs_cuda_device is None else self.needs_cuda_device

    def verified_by(self) -> Evidence:
        from .evidence import evidence_for

        return self.evidence if self.evidence is not None else evidence_for(self.name)

    def upstream_status(self) -> str:
        return f"{self.upstream}; fixed in {self.fixed_in}" if self.fixed_in else f"{self.upstream}; not fixed upstream"


class PatchContext:
    """Records every change a patch makes so that it can be undone exactly."""

    def __init__(self, patch: Patch) -> None:
        self.patch = patch
        self._undo: list[Callable[[], None]] = []
        self.log = logging.getLogger(f"cc_runtime.patches.{patch.name}")

    # -- attribute changes -------------------------------------------------------------------
    def replace(self, owner: Any, attr: str, new: Any, *, rebind: bool = False) -> Any:
        """Set ``owner.attr = new``; returns the original as looked up (None if there was none).

        The raw ``__dict__`` entry is what gets restored, so staticmethod/classmethod descriptors and
        inherited attributes come back exactly as they were. ``rebind`` also replaces stale
        ``from owner import attr`` copies in already-imported modules (as SGLang's hook registry does).
        """
        original = getattr(owner, attr, None)
        raw = _raw_attr(owner, attr)
        setattr(owner, attr, new)

        def undo() -> None:
            if raw is _MISSING:
                try:
                    delattr(owner, attr)
                except AttributeError:
                    pass
            else:
                setattr(owner, attr, raw)

        self._undo.append(undo)
        if rebind and original is not None and isinstance(owner, ModuleType):
            self._rebind(original, new, skip=owner)
        return original

    def wrap(self, owner: Any, attr: str, wrapper: Callable[..., Any], *, rebind: bool = False) -> Any:
        """Wrap ``owner.attr`` with a wrapt wrapper ``wrapper(wrapped, instance, args, kwargs)``.

        wrapt keeps signatures, descriptors and ``__wrapped__`` intact, which SGLang's own plugin hooks
        and inspect-based code rely on.
        """
        import wrapt

        raw = _raw_attr(owner, attr)
        target = raw if raw is not _MISSING else getattr(owner, attr)
        if isinstance(target, (staticmethod, classmethod)):
            wrapped_fn = wrapt.FunctionWrapper(target.__func__, wrapper)
            new: Any = type(target)(wrapped_fn)
        else:
            new = wrapt.FunctionWrapper(target, wrapper)
        self.replace(owner, attr, new, rebind=rebind)
        return new

    def setenv(self, name: str, value: str) -> None:
        old = os.environ.get(name)
        os.environ[name] = value

        def undo() -> None:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old

        self._undo.append(undo)

    def on_revert(self, fn: Callable[[], None]) -> None:
        """Register any other undo step (stop a worker, drop a cache)."""
        self._undo.append(fn)

    def _rebind(self, original: Any, new: Any, skip: ModuleType) -> None:
        for mod in list(sys.modules.values()):
            if mod is None or mod is skip:
                continue
            d = getattr(mod, "__dict__", None)
            if not isinstance(d, dict):
                continue
            for key, value in list(d.items()):
                if value is original:
                    self.replace(mod, key, new)

    # -- used by the registry ----------------------------------------------------------------
    def revert(self) -> list[BaseException]:
        """Undo everything in reverse order; returns (does not raise) errors from undo steps."""
        errors: list[BaseException] = []
        while self._undo:
            step = self._undo.pop()
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - keep undoing the rest
                errors.append(exc)
        return errors


def _raw_attr(owner: Any, attr: str) -> Any:
    d = getattr(owner, "__dict__", None)
    if d is not None and attr in d:
        return d[attr]
    return _MISSING

