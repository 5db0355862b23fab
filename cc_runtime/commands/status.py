"""``cc-runtime status [--dir DIR] [--json]``: what cc_runtime did in each process of a running server.

Reads the per-process files that ``CC_RUNTIME_STATUS_DIR`` asks for (see :mod:`cc_runtime.status_file`),
the scheduler ranks included. Exit 0 with at least one file, 1 with none, 2 without a directory.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

NOTEWORTHY = ("applied", "not applicable", "failed", "skipped", "upstream")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="cc_runtime's status in every process of a running server "
                                      "(the files CC_RUNTIME_STATUS_DIR collects)")
    p.add_argument("--dir", help="status directory (default: CC_RUNTIME_STATUS_DIR)")
    p.add_argument("--json", action="store_true", help="the files' contents as one JSON list")
    p.add_argument("--all", action="store_true", help="list every patch, not only those applied, not "
                                                      "applicable to an installed target, failed, skipped "
                                                      "or upstream")


def render(procs: list[dict[str, Any]], show_all: bool = False) -> str:
    lines: list[str] = []
    now = time.time()
    for p in procs:
        if "error" in p:
            lines.append(f"{p['file']}: unreadable: {p['error']}")
            continue
        cc = p.get("cc") or {}
        age = now - float(p.get("updated") or now)
        lines.append(f"pid {p['pid']} ({'running' if p.get('alive') else 'exited'}) {p.get('role')}: "
                     f"CC {cc.get('label')} ({cc.get('source')}); device {p.get('device') or 'unknown'} "
                     f"[{p.get('device_source')}]; updated {age:.0f} s ago")
        for w in p.get("warnings") or []:
            lines.append(f"  WARNING {w}")
        pre = p.get("preflight")
        if pre:
            bad = [c for c in pre["checks"] if c["result"] in ("fail", "unknown")]
            lines.append(f"  preflight ({pre['mode']}, {pre['where']}): {'ok' if pre['ok'] else 'FAILED'}")
            for c in bad if not show_all else pre["checks"]:
                lines.append(f"    {c['name']:<12} {c['result']:<14} {c['reason']}")
        for row in p.get("patches") or []:
            installed = not row["reason"].endswith("is not installed")
            if show_all or (row["status"] in NOTEWORTHY and installed):
                lines.append(f"  {row['name']:<34} {row['status']:<15} {row['reason']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from .. import settings
    from ..status_file import read_all

    directory = args.dir or settings.get("CC_RUNTIME_STATUS_DIR")
    if not directory:
        print("cc-runtime status: no status directory; start the server with CC_RUNTIME_STATUS_DIR=/abs/dir "
              "(files are written only where CC is on, forced or emulated) or pass --dir")
        return 2
    procs = read_all(directory)
    if args.json:
        print(json.dumps(procs, indent=2))
    elif procs:
        print(render(procs, args.all))
    else:
        print(f"cc-runtime status: no status files in {directory} (CC off, or no process activated cc_runtime)")
    return 0 if procs else 1
