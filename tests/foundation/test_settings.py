from __future__ import annotations

import pytest

from cc_runtime import settings
from cc_runtime.settings import Settings, SettingsError


def test_defaults_with_empty_environment():
    s = Settings.load(env={})
    assert (s.cc, s.disable, s.patches, s.strict, s.emulate, s.timer) == ("auto", False, None, False, None, "auto")


@pytest.mark.parametrize(
    ("var", "raw", "allowed"),
    [
        ("CC_RUNTIME_CC", "yes", "auto|0|1"),
        ("CC_RUNTIME_DISABLE", "true", "0|1"),
        ("CC_RUNTIME_STRICT", "2", "0|1"),
        ("CC_RUNTIME_TIMER", "events", "auto|globaltimer|cuda_event"),
        ("CC_RUNTIME_PATCHES", "a, ,b", "name[,name...]"),
        ("CC_RUNTIME_EMULATE", "on", "profile"),
        ("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "-1", "0 < s <= 3600"),
    ],
)
def test_invalid_values_name_the_variable_and_the_allowed_values(var, raw, allowed):
    with pytest.raises(SettingsError) as info:
        Settings.load(env={var: raw})
    assert var in str(info.value) and allowed in str(info.value) and repr(raw) in str(info.value)


def test_argument_beats_environment_beats_default():
    env = {"CC_RUNTIME_CC": "0", "CC_RUNTIME_TIMER": "cuda_event"}
    assert Settings.load(env=env, cc="1").cc == "1"
    assert Settings.load(env=env).cc == "0"
    assert Settings.load(env=env).timer == "cuda_event"
    assert Settings.load(env={}, strict=True).strict is True


def test_patch_allowlist_names_and_prefixes():
    s = Settings.load(env={"CC_RUNTIME_PATCHES": "triton.autotune_timer, sglang.*"})
    assert s.patch_allowed("triton.autotune_timer")
    assert s.patch_allowed("sglang.readback_worker")
    assert not s.patch_allowed("flashinfer.cc_env")
    assert Settings.load(env={"CC_RUNTIME_PATCHES": "*"}).patch_allowed("anything")


def test_emulate_accepts_profiles_and_off():
    assert Settings.load(env={"CC_RUNTIME_EMULATE": "h100"}).emulate == "h100"
    assert Settings.load(env={"CC_RUNTIME_EMULATE": "off"}).emulate is None
    assert Settings.load(env={"CC_RUNTIME_EMULATE": " H100\n"}).emulate == "h100"


def test_readme_table_lists_every_variable():
    table = settings.markdown_table()
    for name in settings.VARS:
        assert f"`{name}`" in table


@pytest.mark.parametrize("module", ["settings", "settings_checks"])
def test_settings_module_is_stdlib_only(module):
    import ast
    import sys
    from pathlib import Path

    tree = ast.parse((Path(settings.__file__).parent / f"{module}.py").read_text())
    imported = {n.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


# -- every value from the issue report is rejected, on the one path every entry point uses ----------
def _profile(tmp_path, text):
    path = tmp_path / "p.json"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("var", "raw"), [
    ("CC_RUNTIME_EMULATE", "a100"),
    ("CC_RUNTIME_EMULATE", "/nonexistent.json"),
    ("CC_RUNTIME_EMULATE", "JSON:{not json"),
    ("CC_RUNTIME_EMULATE", 'JSON:{"h2d_bandwidth_Bps": -1}'),
    ("CC_RUNTIME_EMULATE", 'JSON:{"d2h_bandwidth_Bps": Infinity}'),
    ("CC_RUNTIME_EMULATE", 'JSON:{"event_corrupt_prob": 1.5}'),
    ("CC_RUNTIME_EMULATE", 'JSON:{"no_such_field": 1}'),
    ("CC_RUNTIME_PATCHES", "sglang.readback_coalese"),
    ("CC_RUNTIME_PATCHES", "nosuch"),
    ("CC_RUNTIME_PATCHES", "1"),
    ("CC_RUNTIME_PATCHES", "true"),
    ("CC_RUNTIME_PATCHES", "nosuch.*"),
    ("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "inf"),
    ("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "1e309"),
    ("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "nan"),
    ("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "\u0661"),
    ("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "0"),
    ("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "3601"),
    ("CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS", "0"),
    ("CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS", "-1"),
    ("CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS", "xxx"),
    ("CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS", "\u0661"),
    ("CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS", "100"),
    ("CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS", "65536"),
    ("CC_RUNTIME_LOG_LEVEL", "\u0131nfo"),  # dotless i: 'ınfo'.upper() == 'INFO'
    ("CC_RUNTIME_DECISION", "{}"),
])
def test_reported_invalid_values_are_rejected(tmp_path, var, raw):
    if raw.startswith("JSON:"):
        raw = _profile(tmp_path, raw[5:])
    with pytest.raises(SettingsError) as info:
        Settings.load(env={var: raw})
    assert info.value.var == var


def test_unknown_patch_name_suggests_the_closest():
    with pytest.raises(SettingsError, match="did you mean sglang.readback_coalesce"):
        Settings.load(env={"CC_RUNTIME_PATCHES": "sglang.readback_coalese"})


def test_valid_numbers_and_json_profiles(tmp_path):
    s = Settings.load(env={"CC_RUNTIME_SHUTDOWN_TIMEOUT_S": " 2.5 ", "CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS": "2048"})
    assert (s.shutdown_timeout_s, s.prefill_graph_max_tokens) == (2.5, 2048)
    path = _profile(tmp_path, '{"name": "mine", "h2d_bandwidth_Bps": 4.9e9}')
    assert Settings.load(env={"CC_RUNTIME_EMULATE": path}).emulate == path


def test_typed_arguments_are_validated_too():
    with pytest.raises(SettingsError):
        settings.get("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", float("nan"))
    with pytest.raises(SettingsError):
        settings.get("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", float("inf"))
    assert settings.get("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", 3) == 3


def test_long_values_are_shortened_in_messages():
    with pytest.raises(SettingsError) as info:
        Settings.load(env={"CC_RUNTIME_TIMER": "x" * 5000})
    assert len(str(info.value)) < 300 and "5000 characters" in str(info.value)


def test_sources_are_recorded():
    s = Settings.load(env={"CC_RUNTIME_TIMER": "cuda_event"}, cc="1")
    assert (s.source("CC_RUNTIME_CC"), s.source("CC_RUNTIME_TIMER"), s.source("CC_RUNTIME_STRICT")) == (
        "argument", "env", "default")


# -- property: any string either parses to a documented value or raises SettingsError -------------
def _documented(name, value):
    if name in ("CC_RUNTIME_CC",):
        return value in ("auto", "0", "1")
    if name == "CC_RUNTIME_PREFLIGHT":
        return value in ("auto", "off", "warn", "require")
    if name == "CC_RUNTIME_LOAD_TP_ROWS":
        return value in ("auto", "on", "off")
    if name == "CC_RUNTIME_TIMER":
        return value in ("auto", "globaltimer", "cuda_event")
    if name == "CC_RUNTIME_LOG_LEVEL":
        return value in ("DEBUG", "INFO", "WARNING", "ERROR")
    if name in ("CC_RUNTIME_DISABLE", "CC_RUNTIME_STRICT", "CC_RUNTIME_BOOTSTRAP", "CC_RUNTIME_STAGING_VERIFY"):
        return isinstance(value, bool)
    if name == "CC_RUNTIME_SHUTDOWN_TIMEOUT_S":
        return isinstance(value, float) and 0 < value <= 3600
    if name == "CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS":
        return isinstance(value, int) and 8 <= value <= 32768 and value % 8 == 0
    if name == "CC_RUNTIME_LOAD_CHUNK_MB":
        return isinstance(value, int) and 1 <= value <= 1024
    if name == "CC_RUNTIME_PATCHES":
        known = settings.known_patch_names()
        return value is None or all(any(k == n or (n.endswith("*") and k.startswith(n[:-1])) for k in known)
                                    for n in value)
    if name == "CC_RUNTIME_EMULATE":
        return value is None or value in ("h100", "h200", "b200", "b300")
    if name == "CC_RUNTIME_DECISION":
        return value is None or (isinstance(value, dict) and isinstance(value["enabled"], bool))
    if name == "CC_RUNTIME_STATUS_DIR":
        return value is None or (isinstance(value, str) and value.startswith("/") and value.isprintable())
    return False  # a new variable needs a line here


def test_every_setting_parses_any_string_to_a_documented_value_or_settings_error():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    interesting = st.sampled_from(["", " ", "0", "1", "08", "4096", "4096 ", "5", "3600", "3600.0", ".5", "5.",
                                   "1e3", "inf", "nan", "-0", "\u0661", "\uff15", "\u00b2", "AUTO", "h100",
                                   "b300", "off", "*", "sglang.*", "sglang.cc_env,triton.*", "\u0131nfo",
                                   "9" * 5000, "1" * 30, "{}", "h100\x00"])

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(name=st.sampled_from(sorted(settings.VARS)), raw=st.one_of(st.text(), interesting))
    def check(name, raw):
        try:
            value = settings.get(name, env={name: raw})
        except SettingsError:
            return
        assert _documented(name, value), (name, raw, value)

    check()


def test_every_variable_has_a_documented_check():
    for name in settings.VARS:
        default = settings.get(name, env={})
        assert _documented(name, default), name


def test_no_cc_runtime_variable_is_read_outside_settings():
    """Every CC_RUNTIME_* read goes through the registry; the start-up gate is the one exception."""
    import re
    from pathlib import Path

    root = Path(settings.__file__).resolve().parents[1]
    pattern = re.compile(r"(environ\s*(\.get\s*\(|\[)|getenv\s*\()\s*[\"']CC_RUNTIME_")
    allowed = {"cc_runtime/settings.py"}
    offenders = []
    files = [*root.joinpath("cc_runtime").rglob("*.py"), root / "_cc_runtime_bootstrap.py"]
    for path in files:
        rel = path.relative_to(root).as_posix()
        text = path.read_text()
        if rel == "_cc_runtime_bootstrap.py":
            continue  # checked below
        if rel not in allowed and (pattern.search(text) or re.search(r"environ\b.*\b[A-Z_]*VAR\b", text)):
            offenders.append(rel)
    assert offenders == [], offenders
    # the gate reads CC_RUNTIME_BOOTSTRAP only to decide whether to import cc_runtime at all
    gate = (root / "_cc_runtime_bootstrap.py").read_text()
    assert gate.count("os.environ") == 1
