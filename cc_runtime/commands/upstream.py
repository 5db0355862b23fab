"""``cc-runtime upstream list|check|export``: the staged upstream PRs (see docs/upstream-prs.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("upstream", help="staged upstream PRs: list, prove on the real upstream source, export")
    cmds = p.add_subparsers(dest="upstream_cmd", required=True, metavar="SUBCOMMAND")
    ls = cmds.add_parser("list", help="every staged PR: project, base version, files, status, runtime patch")
    ls.add_argument("--json", action="store_true")
    ck = cmds.add_parser("check", help="apply each PR to the installed release and run its tests "
                         "(pristine: fail; patched, cc_runtime never imported: pass; runtime patch: pass)")
    ck.add_argument("names", nargs="*", metavar="NAME", help="staged PRs to check (default: all)")
    ck.add_argument("--source", metavar="DIR", help="a site-packages or pip --target folder holding the "
                    "upstream release (default: this interpreter's)")
    ck.add_argument("--python", metavar="EXE", help="interpreter that runs the tests (default: the venv "
                    "of --source, else this one)")
    ck.add_argument("--pythonpath", action="append", default=[], metavar="DIR",
                    help="extra import path for the tests (e.g. import stubs for CPU-only machines)")
    ck.add_argument("--json", action="store_true")
    ex = cmds.add_parser("export", help="write 0001-*.patch (git format-patch form, for git am) and PR.md")
    ex.add_argument("name", metavar="NAME")
    ex.add_argument("--out", required=True, metavar="DIR")
    ex.add_argument("--author", metavar="'NAME <EMAIL>'", help="default: git config user.name/user.email")


def _list(as_json: bool) -> int:
    from ..upstream.staged import all_prs

    rows = [pr.as_dict() for pr in all_prs()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']}  [{r['project']} {r['base_version']}, {r['status']}, "
              f"+{r['lines_added']}/-{r['lines_removed']}]  runtime patch: {r['runtime_patch'] or '-'}")
        print(f"    {r['title']}")
        for f in r["files"]:
            print(f"    {f}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..upstream import records
    from ..upstream.check import Options, check
    from ..upstream.staged import all_prs, get

    try:
        prs = [get(n) for n in args.names] if args.names else all_prs()
    except KeyError as exc:
        print(f"cc-runtime upstream check: {exc.args[0]}", file=sys.stderr)
        return 2
    opts = Options(source=args.source, python=args.python, pythonpath=args.pythonpath)
    results = []
    for pr in prs:
        res = check(pr, opts)
        results.append(res.as_dict())
        if not args.json:
            print(f"{pr.name}: {res.outcome} [{pr.project.dist} installed {res.installed or '-'}, "
                  f"base {pr.base_version}]", flush=True)
            for step in res.steps:
                print(f"    {step}", flush=True)
    records.remember(results)
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if any(r["failed"] for r in results) else 0


def _export(args: argparse.Namespace) -> int:
    from ..upstream.export import ExportError, export
    from ..upstream.staged import get

    try:
        written = export(get(args.name), Path(args.out), args.author)
    except (KeyError, ExportError) as exc:
        print(f"cc-runtime upstream export: {exc.args[0]}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def main(args: argparse.Namespace) -> int:
    if args.upstream_cmd == "list":
        return _list(args.json)
    if args.upstream_cmd == "check":
        return _check(args)
    return _export(args)
