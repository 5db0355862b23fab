"""Placeholder: filled in by the capability that owns it."""

from __future__ import annotations

from ..patching import Patch

PATCHES: list[Patch] = []
