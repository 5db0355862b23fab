from __future__ import annotations

from pathlib import Path

from cc_runtime import docs

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_tables_are_current():
    text = README.read_text()
    assert docs.render(text) == text, "README tables are stale: run `python -m cc_runtime.docs README.md`"


def test_readme_names_the_commands_ci_runs():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert "`cc-runtime bench`" in text and "cc-runtime bench" in ci
    assert "`pip install nox && nox`" in text and "nox" in ci
