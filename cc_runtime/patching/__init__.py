"""Patch framework: the Patch contract (patch.py) and the manager that applies it (manager.py)."""

from .evidence import Evidence
from .manager import PatchError, PatchManager, PatchRecord, installed_version, version_in_range
from .patch import NotApplicable, Patch, PatchContext

__all__ = ["Evidence", "NotApplicable", "Patch", "PatchContext", "PatchError", "PatchManager", "PatchRecord", "installed_version",
           "version_in_range"]
