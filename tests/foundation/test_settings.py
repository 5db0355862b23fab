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
        ("CC_RUNTIME_PATCHES", " , ", "comma-separated"),
        ("CC_RUNTIME_EMULATE", "on", "profile"),
        ("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "-1", "positive"),
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
    s = Settings.load(env={"CC_RUNTIME_PATCHES": "triton.do_bench, sglang.*"})
    assert s.patch_allowed("triton.do_bench")
    assert s.patch_allowed("sglang.readback")
    assert not s.patch_allowed("flashinfer.cc_env")
    assert Settings.load(env={"CC_RUNTIME_PATCHES": "*"}).patch_allowed("anything")


def test_emulate_accepts_profiles_and_off():
    assert Settings.load(env={"CC_RUNTIME_EMULATE": "h100"}).emulate == "h100"
    assert Settings.load(env={"CC_RUNTIME_EMULATE": "off"}).emulate is None
    assert Settings.load(env={"CC_RUNTIME_EMULATE": "/tmp/p.json"}).emulate == "/tmp/p.json"


def test_readme_table_lists_every_variable():
    table = settings.markdown_table()
    for name in settings.VARS:
        assert f"`{name}`" in table


def test_settings_module_is_stdlib_only():
    import ast
    import sys
    from pathlib import Path

    tree = ast.parse(Path(settings.__file__).read_text())
    imported = {n.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
