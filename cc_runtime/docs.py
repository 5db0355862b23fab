"""Tables the README shows, generated from the code and the committed results so they cannot drift (a
test compares them).

    python -m cc_runtime.docs README.md   # rewrite the generated blocks in place
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


BLOCKS = {"env-table": env_table, "patch-table": patch_table, "goals-table": goals_table,
          "measured-figures": measured_figures}


def render(text: str) -> str:
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- {name}:start/end --> block")
        block = make() + "\n"
        text = pattern.sub(lambda m, block=block: m.group(1) + block + m.group(2), text)  # type: ignore[misc]
    return text


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "README.md"
    with open(path) as f:
        old = f.read()
    new = render(old)
    if new != old:
        with open(path, "w") as f:
            f.write(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
