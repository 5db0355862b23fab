"""Decides, applies and reverts patches: version gates, CC gates, post-import hooks, strict mode.

Every patch ends in exactly one status, with a reason (docs/patches.md's status table is this list):

  applied         active now
  waiting         wanted and its target fits; applies when its module is imported (post-import hook)
  not applicable  not for this process: target not installed, installed version covered by a sibling
                  patch of the same family instead, not wanted in this CC state (e.g. the emulator
                  under forced CC), the target cannot take it here (apply raised NotApplicable: the
                  emulator's CUDA hooks on a CPU-only torch), or the serving device is not CUDA (``device cpu``)
  upstream        the installed upstream already has the fix
  disabled        turned off: CC off, CC_RUNTIME_DISABLE=1, not in CC_RUNTIME_PATCHES, or reverted
  skipped         the installed target is outside every supported range of the patch's family
  failed          apply raised; whatever it changed was rolled back

Strict mode (``CC_RUNTIME_STRICT=1``) fails on ``skipped`` and ``failed`` only, i.e. when something
that should apply did not: every applied patch is reverted, then :class:`PatchError` is raised.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..detect import CCState
from ..settings import Settings
from ..visible import emit
from .patch import NotApplicable, Patch, PatchContext

log = logging.getLogger("cc_runtime.patching")


class PatchError(RuntimeError):
    """Raised in strict mode when a patch that should apply did not (after rolling everything back)."""

    cc_runtime_strict = True


@dataclass
class PatchRecord:
    patch: Patch
    status: str = "disabled"
    reason: str = "cc_runtime not activated"
    version: str | None = None
    ctx: PatchContext | None = field(default=None, repr=False)
    cause: BaseException | None = field(default=None, repr=False)

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
            "evidence": {"level": p.verified_by().level(), **p.verified_by().as_dict()},
            "family": family_of(p),
            "opt_in": p.opt_in,
        }


def installed_version(dist: str) -> str | None:
    import importlib.metadata

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


def family_of(patch: Patch) -> str:
    """Patches of one family are version-specific variants of one fix (default: one per target)."""
    return patch.family or patch.target


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
        #: Called after a strict-mode rollback (the runtime restores the variables it exported).
        self.on_strict_failure: Callable[[str], None] | None = None
        #: Called after any patch's status changed (the runtime rewrites this process's status file).
        self.on_change: Callable[[], None] | None = None

    # -- activation --------------------------------------------------------------------------
    def activate(self, state: CCState, settings: Settings) -> None:
        """Decide every patch for this state; in strict mode raise PatchError (all rolled back) when a
        patch that should apply did not."""
        with self._lock:
            self._active = True
            self._strict = settings.strict
            for rec in self.records.values():
                if rec.status in ("applied", "waiting"):
                    # Re-activation with another state or allowlist: undo what is no longer wanted.
                    unwanted = self._unwanted(rec, state, settings)
                    if unwanted:
                        self._withdraw(rec, *unwanted)
                    continue
                self._decide(rec, state, settings)
            self._log_summary(state)
            failures = [r for r in self.records.values() if r.status in ("skipped", "failed")]
            if self._strict and failures:
                self._fail_strict(failures)

    def _fail_strict(self, failures: list[PatchRecord]) -> None:
        what = "; ".join(f"{r.patch.name} {r.status}: {r.reason}" for r in failures)
        cause = next((r.cause for r in failures if r.cause is not None), None)
        message = f"cc_runtime strict mode: {what}"
        self.revert_all(reason="rolled back: strict mode failure of " + ", ".join(r.patch.name for r in failures))
        if self.on_strict_failure is not None:
            self.on_strict_failure(message)
        raise PatchError(message) from cause

    @staticmethod
    def _unwanted(rec: PatchRecord, state: CCState, settings: Settings) -> tuple[str, str] | None:
        """(status, reason) when the patch must not be active in this state, else None."""
        if state.source == "disabled":
            return "disabled", state.reason
        if not state.enabled:
            return "disabled", "CC off"  # why is in the CC state (status()["cc"]["reason"])
        if not settings.patch_allowed(rec.patch.name):
            return "disabled", "not in CC_RUNTIME_PATCHES"
        if rec.patch.opt_in and not settings.patch_named(rec.patch.name):
            return "disabled", "opt-in: applies only when named in CC_RUNTIME_PATCHES"
        if not rec.patch.when(state):
            return "not applicable", f"not wanted for CC state {state.label}"
        return None

    def _withdraw(self, rec: PatchRecord, status: str, reason: str) -> list[BaseException]:
        errors: list[BaseException] = []
        if rec.status == "applied" and rec.ctx is not None:
            errors = rec.ctx.revert()
            rec.ctx = None
            self._set(rec, status, f"reverted: {reason}")
        else:
            self._set(rec, status, reason, quiet=True)
        return errors

    def _decide(self, rec: PatchRecord, state: CCState, settings: Settings) -> None:
        p = rec.patch
        rec.cause = None
        unwanted = self._unwanted(rec, state, settings)
        if unwanted:
            self._set(rec, *unwanted, quiet=unwanted[1] != "not in CC_RUNTIME_PATCHES")
            return
        rec.version = installed_version(p.target)
        if rec.version is None:
            self._set(rec, "not applicable", f"{p.target} is not installed", quiet=True)
            return
        if not version_in_range(rec.version, p.versions):
            sibling = self._sibling_for(rec)
            if sibling is not None:
                # An explicit family: the sibling is the same fix for this version. The default family
                # (the target) only says the installed version is supported by some patch of it.
                covers = (f"{sibling.patch.name} ({sibling.patch.versions}) covers it" if p.family else
                          f"a fix for those releases only ({p.target} {rec.version} is supported: "
                          f"{sibling.patch.name} targets it)")
                self._set(rec, "not applicable", f"{p.target} {rec.version} is outside {p.versions}; {covers}",
                          quiet=True)
            else:
                ranges = "; ".join(sorted({r.patch.versions for r in self._family(rec)}))
                self._set(rec, "skipped", f"{p.target} {rec.version} is outside every supported range "
                          f"of {family_of(p)} ({ranges})")
            return
        if p.module is None:
            self._apply(rec)
            return
        self._set(rec, "waiting", f"waiting for `import {p.module}`", quiet=True)
        self._hook(p.module)

    def _family(self, rec: PatchRecord) -> list[PatchRecord]:
        fam = family_of(rec.patch)
        return [r for r in self.records.values() if family_of(r.patch) == fam]

    def _sibling_for(self, rec: PatchRecord) -> PatchRecord | None:
        for other in self._family(rec):
            if other is not rec and rec.version and version_in_range(rec.version, other.patch.versions):
                return other
        return None

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
                if rec.status == "waiting" and rec.patch.module == module:
                    try:
                        self._apply(rec)
                    except Exception as exc:  # noqa: BLE001 - a raising hook would break the user's import
                        self._set(rec, "failed", f"crashed outside apply: {type(exc).__name__}: {exc}")
                    if self._strict and rec.status in ("skipped", "failed"):
                        # Strict: the import that triggered this fails, with everything rolled back.
                        self._fail_strict([rec])

    def _apply(self, rec: PatchRecord) -> None:
        p = rec.patch
        if p.cuda_only():
            from .device import require_cuda_device

            try:
                require_cuda_device()
            except NotApplicable as exc:
                self._set(rec, "not applicable", str(exc))
                return
        if p.upstream_has_it is not None:
            try:
                why = p.upstream_has_it()
            except Exception as exc:  # noqa: BLE001
                rec.cause = exc
                self._set(rec, "failed", f"could not inspect upstream: {type(exc).__name__}: {exc}")
                return
            if why:
                self._set(rec, "upstream", why)
                return
        ctx = PatchContext(p)
        try:
            p.apply(ctx)
        except NotApplicable as exc:
            undo_errors = ctx.revert()  # nothing should have changed yet; undo it all the same
            extra = f" (rollback errors: {undo_errors})" if undo_errors else ""
            self._set(rec, "not applicable", f"{exc}{extra}")
            return
        except Exception as exc:  # noqa: BLE001 - all-or-nothing: undo what got done, then report
            undo_errors = ctx.revert()
            extra = f" (rollback errors: {undo_errors})" if undo_errors else ""
            rec.cause = exc
            self._set(rec, "failed", f"apply failed and was rolled back: {type(exc).__name__}: {exc}{extra}")
            return
        rec.ctx = ctx
        self._set(rec, "applied", f"{p.target} {rec.version}: {p.summary}")

    def _set(self, rec: PatchRecord, status: str, reason: str, quiet: bool = False) -> None:
        changed = (rec.status, rec.reason) != (status, reason)
        rec.status, rec.reason = status, reason
        if changed and self.on_change is not None and self._active:
            self.on_change()
        if quiet:
            return
        message = f"cc_runtime patch {rec.patch.name}: {status} ({reason})"
        if status in ("skipped", "failed"):
            # The status table promises a warning: one line on stderr when no logging is configured.
            emit(log, logging.WARNING, message)
        else:
            log.info(message)

    def _log_summary(self, state: CCState) -> None:
        counts: dict[str, int] = {}
        for rec in self.records.values():
            counts[rec.status] = counts.get(rec.status, 0) + 1
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        log.info("cc_runtime: CC %s (%s, %s); patches: %s", state.label, state.source, state.reason, parts)

    # -- revert ------------------------------------------------------------------------------
    def revert_all(self, reason: str = "reverted on request") -> list[BaseException]:
        errors: list[BaseException] = []
        with self._lock:
            self._active = False
            for rec in reversed(list(self.records.values())):
                if rec.status == "applied":
                    errors += self._withdraw(rec, "disabled", reason)
                elif rec.status == "waiting":
                    self._withdraw(rec, "disabled", f"{reason} (before its module was imported)")
        return errors

    def as_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.as_dict() for r in self.records.values()]
