"""Check a `cc-runtime sweep` run against the real SGLang server on CPU (nox serve-0.5.23).

Usage: check_serve_sweep.py OUT_DIR. Passes when results.jsonl holds an ok cell for each of the three
arms, every record is labelled a CPU run (not a CC measurement), report.md says so, and the plots exist.
Exit 1 with what is missing otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ARMS = ("cc-off", "cc", "cc+cc_runtime")


def problems(out: Path) -> list[str]:
    found: list[str] = []
    results = out / "results.jsonl"
    if not results.exists():
        return [f"{results} is missing"]
    cells = [r for r in map(json.loads, results.read_text().splitlines()) if r.get("kind") == "cell"]
    for arm in ARMS:
        rows = [r for r in cells if r.get("arm") == arm]
        if not rows or any(r.get("status") != "ok" for r in rows):
            found.append(f"arm {arm}: " + ("; ".join(f"{r.get('status')}: {r.get('reason')}" for r in rows)
                                          or "no cell"))
    unlabelled = [r.get("arm") for r in cells if r.get("device") != "cpu" or "CPU" not in str(r.get("results_label"))]
    if unlabelled:
        found.append(f"records not labelled as CPU results: {unlabelled}")
    report = out / "report.md"
    if not report.exists() or "CPU DEVICE RESULTS" not in report.read_text():
        found.append(f"{report} is missing or not labelled CPU")
    if not list(out.glob("*.png")):
        found.append(f"no plots in {out}")
    return found


def main() -> int:
    out = Path(sys.argv[1])
    found = problems(out)
    for p in found:
        print(f"serve sweep check: {p}", file=sys.stderr)
    if not found:
        print(f"serve sweep check: ok ({out}: three arms, labelled CPU, report.md and plots)")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
