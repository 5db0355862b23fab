"""Tables the docs show, generated from the code and the committed results so they cannot drift (tests
compare them). Each table lives in one file, beside the prose that explains it (:data:`HOMES`):
the README keeps the settings table and the headline results; docs/ holds the rest.

    python -m cc_runtime.docs            # rewrite the generated blocks of every file in HOMES
    python -m cc_runtime.docs FILE...    # the same, plus the blocks present in FILE...

(``python -m cc_runtime.docs README.md`` therefore still regenerates every file.)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = "benchmarks/results"


def env_table() -> str:
    from .settings import markdown_table

    return markdown_table()


def _cell(c: str) -> str:
    return c.replace("|", "\\|") if not c.startswith("`") else c


def patch_table() -> str:
    from .patches import all_patches

    rows = ["| patch | target | versions | what it does | upstream status | evidence |", "|---|---|---|---|---|---|"]
    for p in all_patches():
        cells = [f"`{p.name}`", p.target, f"`{p.versions}`", p.summary, p.upstream_status(), p.verified_by().summary()]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def goals_table() -> str:
    from .bench.goals import markdown_table

    return markdown_table()


def _results(root: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every committed benchmark result (a JSON with a ``benchmark`` key; calibrated profiles beside them
    are inputs, not figures)."""
    out = []
    for path in sorted((root / RESULTS).glob("*/*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "benchmark" in data:
            out.append((path.relative_to(root).as_posix(), data))
    return out


def measured_figures(root: Path = ROOT) -> str:
    """Every summary value of every committed result: median [min-max] (n), the goal and met/MISSED."""
    from .bench.common import fmt_spread
    from .bench.goals import goals_for

    results = _results(root)
    if not results:
        return f"(no committed results under {RESULTS}/)"
    rows = ["| result file | device | benchmark | summary key | median [min-max] | n | where | goal |",
            "|---|---|---|---|---|---|---|---|"]
    for rel, data in results:
        env = data.get("environment", {})
        kind = env.get("device_kind", "?")
        device = f"{kind}, CC {env.get('cc', '?')}"
        goals = {g.key: g for g in goals_for(data.get("benchmark", ""), kind)}
        for key, value in (data.get("summary") or {}).items():
            if value is None or isinstance(value, (str, bool)):
                continue
            info = value if isinstance(value, dict) else {}
            where = f"batch {info['batch']}" if "batch" in info else str(info.get("kernel", ""))
            # A count ({"value": v, "n": n}) shows its value; n has its own column.
            shown = fmt_spread(info["value"] if "value" in info and "median" not in info else value)
            goal = goals.get(key)
            judged = f"{goal.describe()}: {goal.judge(data['summary'])}" if goal else ""
            rows.append(f"| `{rel}` | {device} | {data.get('benchmark', '?')} | `{key}` | "
                        f"{_cell(shown)} | {info.get('n', '')} | {_cell(where)} | {judged} |")
    return "\n".join(rows)


def results_table(root: Path = ROOT) -> str:
    """The README's one results table: every goal a committed result is judged against, with the measured
    value (median [min-max], n), the verdict and the file it comes from."""
    from .bench.common import fmt_spread
    from .bench.goals import goals_for

    rows = ["| benchmark | summary key | measured: median [min-max] | n | goal | verdict | device | source |",
            "|---|---|---|---|---|---|---|---|"]
    for rel, data in _results(root):
        env = data.get("environment", {})
        kind = env.get("device_kind", "?")
        summary = data.get("summary") or {}
        for goal in goals_for(data.get("benchmark", ""), kind):
            if goal.key not in summary:
                continue
            value = summary[goal.key]
            info = value if isinstance(value, dict) else {}
            shown = fmt_spread(info["value"] if "value" in info and "median" not in info else value)
            rows.append(f"| {data.get('benchmark', '?')} | `{goal.key}` | {_cell(shown)} | {info.get('n', '')} | "
                        f"`{goal.op} {goal.target:g}` | {goal.judge(summary)} | {kind}, CC {env.get('cc', '?')} | "
                        f"[`{rel.removeprefix(RESULTS + '/')}`]({rel}) |")  # link from the root
    if len(rows) == 2:
        return f"(no committed results under {RESULTS}/)"
    return "\n".join(rows)


BLOCKS = {"env-table": env_table, "patch-table": patch_table, "goals-table": goals_table,
          "measured-figures": measured_figures, "results-table": results_table}

#: Which file holds which generated blocks (paths from the repository root). Every block has one home.
HOMES: dict[str, tuple[str, ...]] = {
    "README.md": ("env-table", "results-table"),
    "docs/patches.md": ("patch-table",),
    "docs/benchmarks.md": ("goals-table", "measured-figures"),
}


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)


def render(text: str, required: tuple[str, ...] = ()) -> str:
    """Refill every generated block present in ``text``; a block named in ``required`` must be there."""
    for name, make in BLOCKS.items():
        pattern = _pattern(name)
        if not pattern.search(text):
            if name in required:
                raise ValueError(f"no <!-- {name}:start/end --> block")
            continue
        block = make() + "\n"
        text = pattern.sub(lambda m, block=block: m.group(1) + block + m.group(2), text)  # type: ignore[misc]
    return text


def render_file(path: Path, required: tuple[str, ...] = ()) -> bool:
    """Rewrite ``path``'s generated blocks in place; True when it changed."""
    old = path.read_text()
    new = render(old, required)
    if new != old:
        path.write_text(new)
    return new != old


def main(argv: list[str]) -> int:
    targets = {ROOT / rel: blocks for rel, blocks in HOMES.items()}
    for extra in argv:
        targets.setdefault(Path(extra).resolve(), ())
    for path, blocks in targets.items():
        if render_file(path, blocks):
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
