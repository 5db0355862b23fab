"""The README is a short front page; the generated tables live where docs.HOMES puts them, and are
current; the two commands it names are the ones CI runs; its links and the docs' links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cc_runtime import docs

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"



@pytest.mark.parametrize("rel", sorted(docs.HOMES))
def test_generated_tables_are_current_in_their_home(rel):
    text = (ROOT / rel).read_text()
    assert docs.render(text, docs.HOMES[rel]) == text, "stale tables: run `python -m cc_runtime.docs`"


def test_every_block_has_exactly_one_home():
    homes = [b for blocks in docs.HOMES.values() for b in blocks]
    assert sorted(homes) == sorted(docs.BLOCKS)


def test_the_tables_hold_every_variable_and_patch():
    from cc_runtime.patches import all_patches
    from cc_runtime.settings import VARS

    readme = README.read_text()
    for name in VARS:  # the README's env table: issues and docs point users at it
        assert f"| `{name}` |" in readme
    patches = (ROOT / "docs" / "patches.md").read_text()
    for patch in all_patches():
        assert f"| `{patch.name}` |" in patches


def test_render_fills_an_empty_block_and_rejects_a_missing_required_one():
    empty = "a\n" + "".join(f"<!-- {b}:start -->\n<!-- {b}:end -->\n" for b in docs.BLOCKS)
    filled = docs.render(empty)
    assert "`CC_RUNTIME_CC`" in filled and docs.render(filled) == filled
    assert docs.render("no blocks here") == "no blocks here"  # a page without generated tables
    with pytest.raises(ValueError, match="env-table"):
        docs.render("no blocks here", ("env-table",))


def test_main_regenerates_every_home(tmp_path, monkeypatch):
    for rel, blocks in docs.HOMES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("".join(f"<!-- {b}:start -->\n<!-- {b}:end -->\n" for b in blocks))
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    assert docs.main([]) == 0
    assert "`CC_RUNTIME_CC`" in (tmp_path / "README.md").read_text()
    assert "| `emulation` |" in (tmp_path / "docs" / "patches.md").read_text()


def test_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; depth belongs in docs/"
    head = "\n".join(lines[:40])
    assert "not on PyPI" in head.replace("Not on PyPI", "not on PyPI")
    assert "GPU | nothing yet" in head and "CC hardware | nothing yet" in head


def test_readme_names_the_commands_ci_runs():
    text = README.read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "`cc-runtime bench`" in text and re.search(r"cc-runtime bench\b", ci)
    assert "`pip install nox && nox`" in text and re.search(r"^\.venv/bin/nox\b", ci, re.M)


def test_install_lines_work_without_pypi():
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        assert "pip install cc-runtime" not in text and '"cc-runtime[' not in text, f"{page.name}: not on PyPI"
    assert "--index-url https://download.pytorch.org/whl/cpu" in README.read_text()


def _links(page: Path) -> list[str]:
    return [m for m in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()) if "://" not in m]


@pytest.mark.parametrize("page", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for link in _links(page):
        target = (page.parent / link).resolve()
        rel = target.relative_to(ROOT).as_posix() if target.is_relative_to(ROOT) else str(target)
        assert target.exists(), f"{page.name} links {link} ({rel}), which does not exist"
