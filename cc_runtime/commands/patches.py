"""``cc-runtime patches [--json]``: every patch with its status (docs/patches.md's status table)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("patches", help="every patch with its status, reason, upstream status, evidence and "
                       "staged upstream PR")
    p.add_argument("--json", action="store_true", help="machine-readable (the rows of doctor --json)")


def main(args: argparse.Namespace) -> int:
    from ..doctor import render_patches
    from ..runtime import manager
    from ..upstream.links import annotate

    data = annotate(manager().as_list())
    print(json.dumps(data, indent=2) if args.json else render_patches(data))
    return 0
