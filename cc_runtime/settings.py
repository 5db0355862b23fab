"""Every ``CC_RUNTIME_*`` environment variable, in one place.

Stdlib only: the ``.pth`` bootstrap imports this in every Python process, so it must stay cheap and
must never pull in torch. Parsing is strict (a boolean is ``0`` or ``1``, nothing else) because a
typo in a deployment should fail loudly in the CLI instead of silently turning a fix off.

Precedence, everywhere: explicit argument > environment variable > detection > default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class SettingsError(ValueError):
    """An environment variable or argument holds a value that is not allowed."""

    def __init__(self, var: str, value: str, allowed: str) -> None:
        super().__init__(f"{var}={value!r} is not valid; allowed: {allowed}")
        self.var = var
        self.value = value
        self.allowed = allowed


@dataclass(frozen=True)
class Var:
    name: str
    default: str
    allowed: str
    doc: str
    parse: Callable[[str, str], Any] = field(repr=False)


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(var: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise SettingsError(var, raw, "|".join(choices))
        return value

    return parse


def _bool(var: str, raw: str) -> bool:
    value = raw.strip()
    if value not in ("0", "1"):
        raise SettingsError(var, raw, "0|1")
    return value == "1"


def _patch_list(var: str, raw: str) -> frozenset[str] | None:
    """``*`` (all) -> None; otherwise a comma-separated allowlist of patch names or prefixes."""
    value = raw.strip()
    if value == "*":
        return None
    names = frozenset(p.strip() for p in value.split(",") if p.strip())
    if not names:
        raise SettingsError(var, raw, "'*' or a comma-separated list of patch names")
    for name in names:
        if not all(c.isalnum() or c in "._-*" for c in name):
            raise SettingsError(var, raw, "'*' or a comma-separated list of patch names")
    return names


def _emulate(var: str, raw: str) -> str | None:
    value = raw.strip()
    if value.lower() in ("", "off", "0"):
        return None
    # A profile name (built in) or a path to a JSON profile; validated by the emulator when used,
    # because the emulator's profile table is not stdlib-cheap to load here.
    if value.lower() in ("1", "on", "true"):
        raise SettingsError(var, raw, "off | a profile name (h100, b300) | a path to a JSON profile")
    return value


def _positive_float(var: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(var, raw, "a positive number") from None
    if not value > 0:
        raise SettingsError(var, raw, "a positive number")
    return value


def _positive_int(var: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(var, raw, "a positive integer") from None
    if value <= 0:
        raise SettingsError(var, raw, "a positive integer")
    return value


def _log_level(var: str, raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(var, raw, "DEBUG|INFO|WARNING|ERROR")
    return value


VARS: dict[str, Var] = {
    v.name: v
    for v in (
        Var("CC_RUNTIME_CC", "auto", "auto|0|1",
            "CC state: auto = detect through NVML; 1 = force on (patches apply as if CC were on); "
            "0 = force off (nothing is patched).", _choice("auto", "0", "1")),
        Var("CC_RUNTIME_DISABLE", "0", "0|1",
            "1 turns cc_runtime into a no-op in this process and its children, whatever the CC state.",
            _bool),
        Var("CC_RUNTIME_PATCHES", "*", "* | name[,name...]",
            "Allowlist of patches to apply; a name ending in '*' matches a prefix (e.g. 'sglang.*').",
            _patch_list),
        Var("CC_RUNTIME_STRICT", "0", "0|1",
            "1 raises instead of skipping a patch that cannot apply (for CI and staging).", _bool),
        Var("CC_RUNTIME_EMULATE", "off", "off | h100 | b300 | /path/profile.json",
            "Emulate CC's costs and semantics with this profile (never on a machine where real CC is on).",
            _emulate),
        Var("CC_RUNTIME_TIMER", "auto", "auto|globaltimer|cuda_event",
            "Kernel timer for benchmarks and autotuners: auto = globaltimer when available.",
            _choice("auto", "globaltimer", "cuda_event")),
        Var("CC_RUNTIME_BOOTSTRAP", "0", "0|1",
            "Set by `import cc_runtime` and `cc-runtime launch`: the .pth bootstrap activates cc_runtime "
            "in every Python process that inherits it. Not normally set by hand.", _bool),
        Var("CC_RUNTIME_LOG_LEVEL", "WARNING", "DEBUG|INFO|WARNING|ERROR",
            "Level for the 'cc_runtime' logger when the bootstrap paths configure it (the library "
            "itself adds no handlers).", _log_level),
        Var("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "5", "a positive number",
            "Longest wait for pending readback copies at shutdown and exit.", _positive_float),
        Var("CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS", "4096", "a positive integer",
            "Under CC, SGLang's prefill/mixed CUDA graphs are captured up to this many tokens unless the "
            "server arguments set sizes explicitly (beyond it a forward is compute-bound).", _positive_int),
    )
}


def get(name: str, value: Any = None, env: Mapping[str, str] | None = None) -> Any:
    """Resolve one setting: explicit ``value`` > environment > default.

    Raises SettingsError (naming the variable and the allowed values) on an invalid value.
    """
    var = VARS[name]
    if value is not None:
        return var.parse(name, str(value)) if isinstance(value, str) else value
    env = os.environ if env is None else env
    raw = env.get(name)
    if raw is None or raw == "":
        return var.parse(name, var.default)
    return var.parse(name, raw)


@dataclass(frozen=True)
class Settings:
    cc: str
    disable: bool
    patches: frozenset[str] | None
    strict: bool
    emulate: str | None
    timer: str
    log_level: str
    shutdown_timeout_s: float

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """All settings at once; keyword overrides win over the environment."""
        return cls(
            cc=get("CC_RUNTIME_CC", overrides.get("cc"), env),
            disable=get("CC_RUNTIME_DISABLE", overrides.get("disable"), env),
            patches=get("CC_RUNTIME_PATCHES", overrides.get("patches"), env),
            strict=get("CC_RUNTIME_STRICT", overrides.get("strict"), env),
            emulate=get("CC_RUNTIME_EMULATE", overrides.get("emulate"), env),
            timer=get("CC_RUNTIME_TIMER", overrides.get("timer"), env),
            log_level=get("CC_RUNTIME_LOG_LEVEL", overrides.get("log_level"), env),
            shutdown_timeout_s=get("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", overrides.get("shutdown_timeout_s"), env),
        )

    def patch_allowed(self, name: str) -> bool:
        if self.patches is None:
            return True
        for pattern in self.patches:
            if pattern == name or (pattern.endswith("*") and name.startswith(pattern[:-1])):
                return True
        return False


def markdown_table() -> str:
    """The README's env-var table, generated so the two never drift."""
    rows = ["| variable | values | default | meaning |", "|---|---|---|---|"]
    for v in VARS.values():
        allowed = v.allowed.replace("|", "\\|")  # a bare | would split the Markdown cell
        rows.append(f"| `{v.name}` | `{allowed}` | `{v.default}` | {v.doc} |")
    return "\n".join(rows)
