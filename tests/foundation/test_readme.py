from __future__ import annotations

from pathlib import Path

from cc_runtime import docs

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_tables_are_current():
    text = README.read_text()
    assert docs.render(text) == text, "README tables are stale: run `python -m cc_runtime.docs README.md`"


def test_readme_blocks_hold_every_variable_and_patch():
    from cc_runtime.patches import all_patches
    from cc_runtime.settings import VARS

    text = README.read_text()
    for name in VARS:
        assert f"| `{name}` |" in text
    for patch in all_patches():
        assert f"| `{patch.name}` |" in text


def test_render_fills_an_empty_block_and_rejects_a_missing_one():
    import pytest

    empty = "a\n" + "".join(f"<!-- {b}:start -->\n<!-- {b}:end -->\n" for b in docs.BLOCKS)
    filled = docs.render(empty)
    assert "`CC_RUNTIME_CC`" in filled and docs.render(filled) == filled
    with pytest.raises(ValueError, match="env-table"):
        docs.render("no blocks here")


def test_readme_names_the_commands_ci_runs():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert "`cc-runtime bench`" in text and "cc-runtime bench" in ci
    assert "`pip install nox && nox`" in text and "nox" in ci
