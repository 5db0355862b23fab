"""Patch framework: the Patch contract (patch.py) and the manager that applies it (manager.py)."""

from .manager import PatchError, PatchManager, PatchRecord, installed_version, version_in_range
from .patch import Patch, PatchContext

__all__ = ["Patch", "PatchContext", "PatchError", "PatchManager", "PatchRecord", "installed_version",
           "version_in_range"]
