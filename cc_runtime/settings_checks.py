"""The value checks of :mod:`cc_runtime.settings`, and the :class:`SettingsError` they raise.

A check is called as ``parse(var_name, value)`` with the variable's text (or a typed value passed to the
API) and returns the documented value or raises :class:`SettingsError`, never anything else, so every
entry path can report a bad value in one line. The rules they apply (trimming, strict ``0``/``1`` and
ASCII-decimal numbers, case-insensitive keywords) are described in :mod:`cc_runtime.settings`, which
holds the registry and re-exports every name defined here.

Stdlib only and cheap for the same reason as :mod:`cc_runtime.settings`, which imports this module in
every process the start-up bootstrap reaches: a check that needs more (the patch names, an emulator
profile) imports it inside the check, only when such a value is checked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any

TRIM = " \t\r\n"
_SHOWN_MAX = 60


def shorten(value: object, limit: int = _SHOWN_MAX) -> str:
    """``repr`` of a value for messages; over-long values are cut, with their full length."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


# Defined beside the checks that raise it: settings imports this module, never the reverse.
class SettingsError(ValueError):
    """An environment variable or argument holds a value that is not allowed."""

    def __init__(self, var: str, value: object, allowed: str, why: str = "") -> None:
        msg = f"{var}={shorten(value)} is not valid; allowed: {allowed}"
        super().__init__(msg + (f"; {why}" if why else ""))
        self.var = var
        self.value = value if isinstance(value, str) else str(value)
        self.allowed = allowed
        self.why = why


def _text(var: str, raw: Any, allowed: str) -> str:
    if not isinstance(raw, str):
        raise SettingsError(var, raw, allowed, f"expected text, got {type(raw).__name__}")
    value = raw.strip(TRIM)
    if not value.isascii() or not value.isprintable():
        raise SettingsError(var, raw, allowed, "only printable ASCII is accepted")
    return value


def choice(*choices: str) -> Callable[[str, Any], str]:
    allowed = "|".join(choices)

    def parse(var: str, raw: Any) -> str:
        value = _text(var, raw, allowed).lower()
        if value not in choices:
            raise SettingsError(var, raw, allowed)
        return value

    return parse


def boolean(var: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    value = _text(var, raw, "0|1")
    if value not in ("0", "1"):
        raise SettingsError(var, raw, "0|1")
    return value == "1"


def _digits(text: str, allow_point: bool) -> bool:
    # str.isdigit() and float() accept Unicode digits ('١'), exponents, 'inf' and 'nan': check by hand.
    if not text or len(text) > 24 or text.count(".") > (1 if allow_point else 0):
        return False
    return any(c in "0123456789" for c in text) and all(c in "0123456789." for c in text)


def number(low: float, high: float, allowed: str, *, integer: bool = False, multiple_of: int = 1,
           low_inclusive: bool = True) -> Callable[[str, Any], float | int]:
    """A decimal number in ``[low, high]`` (``(low, high]`` without ``low_inclusive``)."""

    def parse(var: str, raw: Any) -> float | int:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value: float | int = raw
            if not math.isfinite(value) or (integer and value != int(value)):
                raise SettingsError(var, raw, allowed)
            if integer:
                value = int(value)
        else:
            text = _text(var, raw, allowed)
            if not _digits(text, allow_point=not integer):
                raise SettingsError(var, raw, allowed)
            value = int(text) if integer else float(text)
        below = value < low if low_inclusive else value <= low
        if below or value > high or (integer and int(value) % multiple_of):
            raise SettingsError(var, raw, allowed)
        return value

    return parse


def log_level(var: str, raw: Any) -> str:
    allowed = "DEBUG|INFO|WARNING|ERROR"
    value = _text(var, raw, allowed).upper()
    if value not in allowed.split("|"):
        raise SettingsError(var, raw, allowed)
    return value


PATCHES_ALLOWED = "* | name[,name...] (a name ending in * is a prefix)"


def known_patch_names() -> list[str]:
    """Names of every registered patch: plain data below this module (:mod:`cc_runtime.patch_names`),
    so validating a setting never imports the patch registry."""
    from .patch_names import PATCH_NAMES

    return list(PATCH_NAMES)


def patch_list(var: str, raw: Any) -> frozenset[str] | None:
    """``*`` (all) -> None; otherwise names or prefixes, each matching at least one registered patch."""
    text = _text(var, raw, PATCHES_ALLOWED)
    if text == "*":
        return None
    names = [p.strip(TRIM) for p in text.split(",")]
    if not all(names) or len(text) > 2000:
        raise SettingsError(var, raw, PATCHES_ALLOWED, "empty name in the list")
    known = known_patch_names()
    for name in names:
        stem = name[:-1] if name.endswith("*") else name
        if name != "*" and (not stem or "*" in stem or not all(c.isalnum() or c in "._-" for c in stem)):
            raise SettingsError(var, raw, PATCHES_ALLOWED, f"{shorten(name)} is not a patch name or prefix")
        matches = [k for k in known if k.startswith(stem)] if name.endswith("*") else [k for k in known if k == name]
        if not matches:
            import difflib

            close = difflib.get_close_matches(stem, known, n=3, cutoff=0.5)
            close += [f"{p}.*" for p in sorted({k.split('.')[0] for k in known}) if p.startswith(stem[:3])][:2]
            hint = f"did you mean {', '.join(close)}?" if close else f"known patches: {', '.join(known)}"
            raise SettingsError(var, raw, PATCHES_ALLOWED, f"{shorten(name)} matches no patch; {hint}")
    return frozenset(names)


STATUS_DIR_ALLOWED = "unset | an absolute directory path"


def status_dir(var: str, raw: Any) -> str | None:
    """An absolute path (every process of a server must name the same directory whatever its working
    directory); empty -> None (no status files). The directory is created on first write."""
    text = _text(var, raw, STATUS_DIR_ALLOWED)
    if not text:
        return None
    if not os.path.isabs(text) or len(text) > 1024:
        raise SettingsError(var, raw, STATUS_DIR_ALLOWED, "give an absolute path")
    return os.path.normpath(text)


EMULATE_ALLOWED = "off | h100 | h200 | b200 | b300 | /path/profile.json"


def emulate_profile(var: str, raw: Any) -> str | None:
    """``off`` -> None; else a built-in profile name or a readable JSON file whose profile validates.

    The same check as ``cc-runtime bench --emulate`` (both load the profile through
    :func:`cc_runtime.emulator.profiles.load_profile`), done only when emulation is asked for.
    """
    if not isinstance(raw, str):
        raise SettingsError(var, raw, EMULATE_ALLOWED, f"expected text, got {type(raw).__name__}")
    value = raw.strip(TRIM)
    if value.lower() in ("", "off", "0"):
        return None
    if not value.isprintable():
        raise SettingsError(var, raw, EMULATE_ALLOWED, "not printable")
    try:
        from .emulator.profiles import load_profile

        profile = load_profile(value)
    except Exception as exc:  # noqa: BLE001 - ProfileError, or anything a hostile path raises
        raise SettingsError(var, raw, EMULATE_ALLOWED, str(exc)) from None
    if not profile.cc:
        raise SettingsError(var, raw, EMULATE_ALLOWED, f"profile {profile.name!r} is a CC-off profile")
    return value.lower() if value.lower() == profile.name and "/" not in value else value


_DECISION_KEYS = {"enabled": bool, "real": bool, "source": str, "mode": str, "reason": str, "cc": str,
                  "emulate": str}


def decision(var: str, raw: Any) -> dict[str, Any] | None:
    """The parent process's resolved CC decision (JSON written by cc_runtime), or None."""
    allowed = "set by cc_runtime (unset it to detect again)"
    if isinstance(raw, dict):
        data: Any = raw
    else:
        text = _text(var, raw, allowed)
        if text in ("", "0"):
            return None
        import json

        try:
            data = json.loads(text)
        except ValueError:
            raise SettingsError(var, raw, allowed, "not JSON") from None
    if not isinstance(data, dict) or data.get("v") != 1:
        raise SettingsError(var, raw, allowed, "not a version-1 decision object")
    for key, kind in _DECISION_KEYS.items():
        if not isinstance(data.get(key), kind):
            raise SettingsError(var, raw, allowed, f"field {key!r} missing or not {kind.__name__}")
    if not (data.get("profile") is None or isinstance(data.get("profile"), str)):
        raise SettingsError(var, raw, allowed, "field 'profile' must be text or null")
    return dict(data)
