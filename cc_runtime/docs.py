"""Tables the README shows, generated from the code so the two cannot drift (a test compares them).

    python -m cc_runtime.docs README.md   # rewrite the generated blocks in place
"""

from __future__ import annotations

import re
import sys


def env_table() -> str:
    from .settings import markdown_table

    return markdown_table()


def patch_table() -> str:
    from .patches import all_patches

    rows = ["| patch | target | versions | what it does | upstream status |", "|---|---|---|---|---|"]
    for p in all_patches():
        cells = [f"`{p.name}`", p.target, f"`{p.versions}`", p.summary, p.upstream_status()]
        rows.append("| " + " | ".join(c.replace("|", "\\|") if not c.startswith("`") else c for c in cells) + " |")
    return "\n".join(rows)


BLOCKS = {"env-table": env_table, "patch-table": patch_table}


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
