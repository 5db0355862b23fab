"""Decides, applies and reverts patches: version gates, CC gates, post-import hooks, strict mode.

Every patch ends in exactly one status, with a reason:
  disabled  CC is off (or the patch is not in CC_RUNTIME_PATCHES, or it does not want this CC state)
  skipped   target not installed, version outside the declared range, or apply failed (rolled back)
  pending   waiting for its module to be imported (post-import hook registered)
  upstream  the installed upstream already has the fix
  applied   active now
  reverted  was applied, then undone
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..detect import CCState
from ..settings import Settings
from .patch import Patch, PatchContext

log = logging.getLogger("cc_runtime.patching")


class PatchError(RuntimeError):
    """Raised in strict mode when a patch cannot apply."""


@dataclass
class PatchRecord:
    patch: Patch
    status: str = "disabled"
    reason: str = "not activated"
    version: str | None = None
    ctx: PatchContext | None = field(default=None, repr=False)
    out_of_range: bool = False

    def as_dict(self) -> dict[str, Any]:
        p = self.patch
        return {
            "name": p.name,
            "target": p.target,
            "target_version": self.version,
            "versions": p.versions,
            "status": self.status,
            "reason": self.reason,
            "summary": p.summary,
            "upstream": p.upstream_status(),
            "upstream_pr": p.upstream,
            "fixed_in": p.fixed_in,
            "opt_in": p.opt_in,
        }


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a corrupt dist-info must not break activation
        return None


def version_in_range(version: str, spec: str) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return SpecifierSet(spec).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


class PatchManager:
    def __init__(self, patches: Iterable[Patch]) -> None:
        self._lock = threading.RLock()
        self.records: dict[str, PatchRecord] = {}
        for p in patches:
            if p.name in self.records:
                raise ValueError(f"duplicate patch name {p.name!r}")
            self.records[p.name] = PatchRecord(p)
        self._hooked_modules: set[str] = set()
        self._strict = False
        self._active = False

    # -- activation --------------------------------------------------------------------------
    def activate(self, state: CCState, settings: Settings) -> None:
        with self._lock:
            self._active = True
            self._strict = settings.strict
            for rec in self.records.values():
                if rec.status in ("applied", "pending"):
                    # Re-activation with another state or allowlist: undo what is no longer wanted.
                    unwanted = self._unwanted(rec, state, settings)
                    if unwanted:
                        self._withdraw(rec, unwanted)
                    continue
                self._decide(rec, state, settings)
            self._log_summary(state)

    @staticmethod
    def _unwanted(rec: PatchRecord, state: CCState, settings: Settings) -> str | None:
        if not state.enabled:
            return f"CC off ({state.reason})"
        if not settings.patch_allowed(rec.patch.name):
            return "not in CC_RUNTIME_PATCHES"
        if rec.patch.opt_in and (settings.patches is None or rec.patch.name not in settings.patches):
            return "opt-in: applies only when named in CC_RUNTIME_PATCHES"
        if not rec.patch.when(state):
            return f"not wanted for CC state {state.label}"
        return None

    def _withdraw(self, rec: PatchRecord, reason: str) -> list[BaseException]:
        errors: list[BaseException] = []
        if rec.status == "applied" and rec.ctx is not None:
            errors = rec.ctx.revert()
            rec.ctx = None
            self._set(rec, "reverted", reason)
        else:
            self._set(rec, "disabled", reason, quiet=True)
        return errors

    def _decide(self, rec: PatchRecord, state: CCState, settings: Settings) -> None:
        p = rec.patch
        rec.out_of_range = False
        unwanted = self._unwanted(rec, state, settings)
        if unwanted:
            self._set(rec, "disabled", unwanted, quiet=unwanted != "not in CC_RUNTIME_PATCHES")
            return
        rec.version = installed_version(p.target)
        if rec.version is None:
            self._skip(rec, f"{p.target} is not installed", strict_ok=True)
            return
        if not version_in_range(rec.version, p.versions):
            rec.out_of_range = True
            self._skip(rec, f"{p.target} {rec.version} is outside the supported range {p.versions}")
            return
        if p.module is None:
            self._apply(rec)
            return
        self._set(rec, "pending", f"waiting for `import {p.module}`", quiet=True)
        self._hook(p.module)

    def _hook(self, module: str) -> None:
        if module in self._hooked_modules:
            import sys

            if module in sys.modules:  # already imported: wrapt fired our hook long ago
                self._on_import(module)
            return
        self._hooked_modules.add(module)
        import wrapt

        # wrapt calls the hook at once when the module is already imported, else right after import.
        wrapt.register_post_import_hook(lambda _mod: self._on_import(module), module)

    def _on_import(self, module: str) -> None:
        with self._lock:
            if not self._active:
                return
            for rec in self.records.values():
                if rec.status == "pending" and rec.patch.module == module:
                    try:
                        self._apply(rec)
                    except PatchError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - a raising hook would break the user's import
                        log.error("cc_runtime: patch %s crashed outside apply: %s", rec.patch.name, exc)

    def _apply(self, rec: PatchRecord) -> None:
        p = rec.patch
        if p.upstream_has_it is not None:
            try:
                why = p.upstream_has_it()
            except Exception as exc:  # noqa: BLE001
                self._skip(rec, f"could not inspect upstream: {type(exc).__name__}: {exc}")
                return
            if why:
                self._set(rec, "upstream", why)
                return
        ctx = PatchContext(p)
        try:
            p.apply(ctx)
        except Exception as exc:  # noqa: BLE001 - all-or-nothing: undo what got done, then report
            undo_errors = ctx.revert()
            extra = f" (rollback errors: {undo_errors})" if undo_errors else ""
            self._skip(rec, f"apply failed and was rolled back: {type(exc).__name__}: {exc}{extra}", cause=exc)
            return
        rec.ctx = ctx
        self._set(rec, "applied", f"{p.target} {rec.version}: {p.summary}")

    def _skip(self, rec: PatchRecord, reason: str, cause: BaseException | None = None,
              strict_ok: bool = False) -> None:
        # A missing optional target is normal (not everyone runs SGLang); strict mode is about patches
        # that should apply and cannot, so it does not fire for "not installed".
        self._set(rec, "skipped", reason)
        if self._strict and not strict_ok:
            raise PatchError(f"cc_runtime strict mode: patch {rec.patch.name} skipped: {reason}") from cause

    def _set(self, rec: PatchRecord, status: str, reason: str, quiet: bool = False) -> None:
        rec.status, rec.reason = status, reason
        if not quiet:
            log.info("cc_runtime patch %s: %s (%s)", rec.patch.name, status, reason)

    def _log_summary(self, state: CCState) -> None:
        counts: dict[str, int] = {}
        by_target: dict[str, list[PatchRecord]] = {}
        for rec in self.records.values():
            counts[rec.status] = counts.get(rec.status, 0) + 1
            if rec.status != "disabled":
                by_target.setdefault(rec.patch.target, []).append(rec)
        # Version-specific siblings (one patch per upstream version) skip each other by design: warn only
        # when the installed version is outside every range cc_runtime has for that target.
        for target, recs in by_target.items():
            if all(r.out_of_range for r in recs):
                ranges = "; ".join(sorted({r.patch.versions for r in recs}))
                log.warning("cc_runtime: %s %s is outside every supported range (%s): its CC fixes are off",
                            target, recs[0].version, ranges)
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        log.info("cc_runtime: CC %s (%s, %s); patches: %s", state.label, state.source, state.reason, parts)

    # -- revert ------------------------------------------------------------------------------
    def revert_all(self) -> list[BaseException]:
        errors: list[BaseException] = []
        with self._lock:
            self._active = False
            for rec in reversed(list(self.records.values())):
                if rec.status == "applied":
                    errors += self._withdraw(rec, "reverted on request")
                elif rec.status == "pending":
                    self._withdraw(rec, "deactivated before its module was imported")
        return errors

    def as_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.as_dict() for r in self.records.values()]
