"""``cc-runtime preflight [--json] [--attest off|local|remote] [--timeout S]``: is confidentiality established?

Runs every check once (see :mod:`cc_runtime.preflight`) and prints one line per check. Exit status: 0
when no check failed; 1 when one failed, or, with ``CC_RUNTIME_PREFLIGHT=require``, when one failed or
is unknown (then the one refusal line goes to stderr). Off CC every check is ``not applicable`` and the
exit status is 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

ATTEST = ("off", "local", "remote")


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("the timeout must be in (0, 3600] seconds")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser("preflight", help="check that the GPU's confidentiality is established (CC mode, "
                       "DevTools off, ready state, driver, upstream CC detectors; optional attestation)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--attest", choices=ATTEST, default="off",
                   help="verify the GPU attestation report with a fresh nonce: local (nvattest or "
                        "nv-local-gpu-verifier on this machine) or remote (NVIDIA's NRAS: the only "
                        "mode that asks a network service for the verdict)")
    p.add_argument("--timeout", type=_timeout, default=60.0, metavar="S",
                   help="longest wait for the attestation verifier, seconds (default 60)")


def render(report: dict[str, Any]) -> str:
    cc = report["cc"]
    lines = [f"cc_runtime preflight: CC {cc['label']} (source: {cc['source']}), mode {report['mode']}"]
    width = max(len(c["name"]) for c in report["checks"])
    for c in report["checks"]:
        lines.append(f"  {c['name']:<{width}}  {c['result']:<14}  {c['reason']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from .. import preflight, settings
    from ..detect import cc_state

    setting = settings.get("CC_RUNTIME_PREFLIGHT")
    # Asked for explicitly, the preflight always runs: `auto`/`off` only decide the automatic runs.
    mode = "require" if setting == "require" else "warn"
    report = preflight.run(attest=args.attest, timeout_s=args.timeout, mode=mode, where="cli", state=cc_state())
    preflight.remember(report)
    data = report.as_dict()
    refusal = report.refusal() if mode == "require" else None
    if args.json:
        print(json.dumps(data, indent=2))
    elif not refusal:
        print(render(data))
    if refusal:
        print(refusal, file=sys.stderr)
        return 1
    return 1 if report.blocking() else 0
