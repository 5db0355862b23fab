"""Every ``CC_RUNTIME_*`` environment variable, in one place, each with its validator.

The validators and :class:`SettingsError` are defined in :mod:`cc_runtime.settings_checks` and
re-exported here: callers import from this module only.

Stdlib only and cheap: the start-up bootstrap runs this in every Python process that inherits
``CC_RUNTIME_BOOTSTRAP=1``, so it must not pull in torch, logging or dataclasses. Parsing is strict (a
boolean is ``0`` or ``1``, a number is ASCII digits inside documented bounds) because a typo in a
deployment must fail loudly instead of silently turning a fix off. Every path (the API, the CLI, the
automatic import / plugin / ``.pth`` paths) validates through :meth:`Settings.load`, which checks every
variable up front. No other module reads a ``CC_RUNTIME_*`` name from the environment (a test greps for
that); the one exception is the start-up gate in ``_cc_runtime_bootstrap``, which only decides whether
to import cc_runtime at all (and then this module validates the value).

Values: surrounding spaces, tabs and newlines are trimmed; an empty value counts as unset. Keywords
are ASCII and case-insensitive. Precedence, everywhere: explicit argument > environment > default.

Other modules add their own variables by appending a :class:`Var` to :data:`VARS` (``add(Var(...))``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

from .settings_checks import (
    EMULATE_ALLOWED,
    PATCHES_ALLOWED,
    STATUS_DIR_ALLOWED,
    TRIM,
    SettingsError,
    boolean,
    choice,
    decision,
    emulate_profile,
    known_patch_names,
    log_level,
    number,
    patch_list,
    shorten,
    status_dir,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any

# The checks are re-exported so that callers keep one import path, whichever module defines a name.
__all__ = [
    "LOAD_CHUNK_MB_MAX", "PREFILL_GRAPH_MAX_TOKENS_LIMIT", "SHUTDOWN_TIMEOUT_MAX_S", "SOURCES", "VARS",
    "Settings", "SettingsError", "Var", "add", "boolean", "choice", "decision", "emulate_profile", "export",
    "get", "known_patch_names", "log_level", "markdown_table", "number", "patch_list", "raw", "resolve",
    "restore", "shorten", "snapshot", "status_dir",
]


class Var:
    """One variable: its default (as text), what is allowed (as the README shows it), and its parser.

    ``parse(var_name, value)`` gets the trimmed text (or a typed value passed to the API) and returns
    the documented value or raises :class:`SettingsError`; it must never raise anything else.
    ``internal`` variables are set by cc_runtime itself (documented, not meant to be set by hand).
    """

    __slots__ = ("name", "default", "allowed", "doc", "parse", "internal")

    def __init__(self, name: str, default: str, allowed: str, doc: str,
                 parse: Callable[[str, Any], Any], internal: bool = False) -> None:
        self.name, self.default, self.allowed, self.doc = name, default, allowed, doc
        self.parse, self.internal = parse, internal

    @property
    def attr(self) -> str:
        """The :class:`Settings` attribute (and ``activate``/``Settings.load`` keyword) for this variable."""
        return self.name[len("CC_RUNTIME_"):].lower()

    def __repr__(self) -> str:
        return f"Var({self.name!r})"


# -- the registry -------------------------------------------------------------------------------------
SHUTDOWN_TIMEOUT_MAX_S = 3600
PREFILL_GRAPH_MAX_TOKENS_LIMIT = 32768
#: Largest loading chunk (MiB): the pinned host ring and device staging are 2 chunks each.
LOAD_CHUNK_MB_MAX = 1024

VARS: dict[str, Var] = {}


def add(var: Var) -> Var:
    """Register a variable (modules with their own settings call this at import)."""
    if var.name in VARS and VARS[var.name] is not var:
        raise ValueError(f"{var.name} is already registered")
    VARS[var.name] = var
    return var


for _v in (
    Var("CC_RUNTIME_CC", "auto", "auto|0|1",
        "CC state: auto = detect through NVML; 1 = force on (patches apply as if CC were on); "
        "0 = force off (nothing is patched).", choice("auto", "0", "1")),
    Var("CC_RUNTIME_DISABLE", "0", "0|1",
        "1 turns cc_runtime into a no-op in this process and its children, whatever the CC state "
        "(status and doctor report `disabled`).", boolean),
    Var("CC_RUNTIME_PATCHES", "*", PATCHES_ALLOWED,
        "Allowlist of patches to apply (e.g. `sglang.*,triton.autotune_timer`). Every name or prefix "
        "must match a registered patch; an unknown one is an error that suggests the closest names. "
        "Opt-in (experimental) patches apply only when named exactly, never through `*` or a prefix "
        "(`*,sglang.allreduce_fusion_ipc`: every patch plus that opt-in one).",
        patch_list),
    Var("CC_RUNTIME_STRICT", "0", "0|1",
        "1 fails activation (raises; the .pth bootstrap exits the process) when a patch that should "
        "apply did not (`skipped` or `failed`); everything applied is rolled back first. For CI.",
        boolean),
    Var("CC_RUNTIME_EMULATE", "off", EMULATE_ALLOWED,
        "Emulate CC's costs and semantics with this profile: a built-in name or a JSON profile file "
        "(known fields only, finite non-negative numbers, bandwidths > 0, probabilities in [0, 1]). "
        "Refused where real CC is on.", emulate_profile),
    Var("CC_RUNTIME_TIMER", "auto", "auto|globaltimer|cuda_event",
        "Kernel timer for benchmarks and autotuners: auto = globaltimer when available.",
        choice("auto", "globaltimer", "cuda_event")),
    Var("CC_RUNTIME_LOG_LEVEL", "WARNING", "DEBUG|INFO|WARNING|ERROR",
        "Level for the `cc_runtime` logger, set by the automatic paths (import, plugin, .pth) when "
        "given (the library itself adds no handlers).", log_level),
    Var("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "5", f"number, 0 < s <= {SHUTDOWN_TIMEOUT_MAX_S}",
        "Longest wait (seconds, ASCII decimal, no exponent) for pending readback copies at shutdown and "
        "exit.", number(0, SHUTDOWN_TIMEOUT_MAX_S, f"number, 0 < s <= {SHUTDOWN_TIMEOUT_MAX_S}",
                        low_inclusive=False)),
    Var("CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS", "4096",
        f"multiple of 8, 8..{PREFILL_GRAPH_MAX_TOKENS_LIMIT}",
        "Under CC, SGLang's prefill/mixed CUDA graphs are captured up to this many tokens unless the "
        "server arguments set sizes explicitly (beyond it a forward is compute-bound).",
        number(8, PREFILL_GRAPH_MAX_TOKENS_LIMIT, f"multiple of 8, 8..{PREFILL_GRAPH_MAX_TOKENS_LIMIT}",
               integer=True, multiple_of=8)),
    Var("CC_RUNTIME_PREFLIGHT", "auto", "auto|off|warn|require",
        "Preflight checks under CC (CC mode on every GPU, DevTools off, ready state set, a CC driver, "
        "SGLang's and FlashInfer's CC detectors agreeing), once per process where cc_runtime activates "
        "automatically: `warn` prints one WARNING per failed check, `require` ends the process with one "
        "line when a check fails or is unknown (activation rolled back first). `auto`: `warn` on real "
        "CC, `off` otherwise. The `cc-runtime` command itself is never stopped by it.",
        choice("auto", "off", "warn", "require")),
    Var("CC_RUNTIME_LOAD_CHUNK_MB", "128", f"integer MiB, 1..{LOAD_CHUNK_MB_MAX}",
        "Chunk size of `cc_runtime.loading` (and the SGLang loading patch under CC): checkpoint bytes cross "
        "to the GPU in copies of this size; pinned host memory used is 2 chunks, device staging 2 chunks.",
        number(1, LOAD_CHUNK_MB_MAX, f"integer MiB, 1..{LOAD_CHUNK_MB_MAX}", integer=True)),
    Var("CC_RUNTIME_LOAD_TP_ROWS", "auto", "auto|on|off",
        "With tensor parallelism under the SGLang loading patch, whether each rank reads only the dim-0 rows "
        "it keeps (found by tracing the model's own `load_weights`). `auto`: only for model classes whose "
        "row-read load a test proves byte-identical to upstream's (`LlamaForCausalLM`); `on`: every model "
        "the trace accepts; `off`: every tensor crosses whole, as upstream.",
        choice("auto", "on", "off")),
    Var("CC_RUNTIME_STATUS_DIR", "", STATUS_DIR_ALLOWED,
        "Each process in which cc_runtime is active (CC on, forced or emulated) writes `<pid>.json` "
        "here: its CC decision, every patch's status and warnings such as a user-set upstream switch "
        "that disagrees with cc_runtime. Read it with `cc-runtime status`. Nothing is written off CC.",
        status_dir),
    Var("CC_RUNTIME_STAGING_VERIFY", "0", "0|1",
        "1 fills every deferred H2D placeholder, staging slot and staged output with a poison pattern "
        "(0xA5 bytes) when it is made, so a read before its copy lands shows wrong values. For tests "
        "and debugging; costs one device fill per buffer.", boolean),
    Var("CC_RUNTIME_BOOTSTRAP", "0", "0|1",
        "Internal, set by `import cc_runtime` (when CC is on, forced or emulated) and `cc-runtime "
        "launch`: the .pth bootstrap activates cc_runtime in every Python process that inherits it.",
        boolean, internal=True),
    Var("CC_RUNTIME_DECISION", "", "set by cc_runtime",
        "Internal, set like `CC_RUNTIME_BOOTSTRAP`: the parent's resolved CC decision (JSON). A child "
        "with the same `CC_RUNTIME_CC`/`CC_RUNTIME_EMULATE` reuses it instead of querying NVML again.", decision,
        internal=True),
):
    add(_v)

SOURCES = ("argument", "env", "default")


def resolve(name: str, value: Any = None, env: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """One setting and where it came from: explicit ``value`` > environment > default.

    Raises SettingsError (naming the variable and the allowed values) on an invalid value.
    """
    var = VARS[name]
    if value is not None:
        return var.parse(name, value), "argument"
    env = os.environ if env is None else env
    raw = env.get(name)
    if raw is None or not raw.strip(TRIM):
        return var.parse(name, var.default), "default"
    return var.parse(name, raw), "env"


def get(name: str, value: Any = None, env: Mapping[str, str] | None = None) -> Any:
    """Resolve one setting: explicit ``value`` > environment > default (raises SettingsError)."""
    return resolve(name, value, env)[0]


def raw(name: str, env: Mapping[str, str] | None = None) -> str:
    """The trimmed text of a variable as set ('' when unset), for comparing, never for deciding."""
    VARS[name]  # noqa: B018 - only registered names
    return (os.environ if env is None else env).get(name, "").strip(TRIM)


def snapshot(names: Iterable[str]) -> dict[str, str | None]:
    """The current raw values of registered variables (None = unset), for :func:`restore`."""
    return {n: os.environ.get(VARS[n].name) for n in names}


def restore(saved: Mapping[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(VARS[name].name, None)
        else:
            os.environ[VARS[name].name] = value


def export(name: str, value: str) -> None:
    """Set a variable for this process and its children; the value is validated first."""
    VARS[name].parse(name, value)
    os.environ[name] = value


class Settings:
    """Every variable of :data:`VARS`, validated at once; ``settings.cc``, ``settings.strict``...

    Attribute names are the variable names without ``CC_RUNTIME_``, lower-cased.
    """

    __slots__ = ("values", "sources")

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
        object.__setattr__(self, "values", dict(values))
        object.__setattr__(self, "sources", dict(sources))

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """All settings at once; keyword overrides (None = not given) win over the environment.

        Raises SettingsError for the first invalid value, before anything is changed.
        """
        by_attr = {v.attr: v.name for v in VARS.values()}
        unknown = sorted(set(overrides) - set(by_attr))
        if unknown:
            raise TypeError(f"unknown setting(s) {unknown}; known: {sorted(by_attr)}")
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, var in VARS.items():
            values[name], sources[name] = resolve(name, overrides.get(var.attr), env)
        return cls(values, sources)

    def __getattr__(self, attr: str) -> Any:
        try:
            return self.values["CC_RUNTIME_" + attr.upper()]
        except KeyError:
            raise AttributeError(attr) from None

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError("Settings is read-only")

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{VARS[n].attr}={v!r}' for n, v in self.values.items())})"

    def replace(self, **attrs: Any) -> Settings:
        """A copy with already-parsed values replaced (not validated: for tests and internal use)."""
        values, sources = dict(self.values), dict(self.sources)
        for attr, value in attrs.items():
            name = "CC_RUNTIME_" + attr.upper()
            if name not in VARS:
                raise TypeError(f"unknown setting {attr!r}")
            values[name], sources[name] = value, "argument"
        return Settings(values, sources)

    def source(self, name: str) -> str:
        return self.sources[name]

    def patch_allowed(self, name: str) -> bool:
        patterns: Iterable[str] | None = self.values["CC_RUNTIME_PATCHES"]
        if patterns is None:
            return True
        for pattern in patterns:
            if pattern == name or (pattern.endswith("*") and name.startswith(pattern[:-1])):
                return True
        return False

    def patch_named(self, name: str) -> bool:
        """Named exactly in CC_RUNTIME_PATCHES (what an opt-in patch needs; '*' and prefixes do not count)."""
        patterns: Iterable[str] | None = self.values["CC_RUNTIME_PATCHES"]
        return patterns is not None and name in patterns

    def describe(self) -> dict[str, dict[str, Any]]:
        """``{name: {"value", "source", "default"}}`` for status() and doctor (JSON-friendly)."""
        out: dict[str, dict[str, Any]] = {}
        for name, value in self.values.items():
            shown = sorted(value) if isinstance(value, frozenset) else value
            out[name] = {"value": shown, "source": self.sources[name], "default": VARS[name].default or None}
        return out


def markdown_table() -> str:
    """The README's env-var table, generated so the two never drift."""
    rows = ["| variable | values | default | meaning |", "|---|---|---|---|"]
    for v in VARS.values():
        allowed = v.allowed.replace("|", "\\|")  # a bare | would split the Markdown cell
        default = f"`{v.default}`" if v.default else "unset"
        rows.append(f"| `{v.name}` | `{allowed}` | {default} | {v.doc} |")
    return "\n".join(rows)
