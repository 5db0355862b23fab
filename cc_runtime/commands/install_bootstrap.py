"""``cc-runtime install-bootstrap``: put the start-up bootstrap into this interpreter's site-packages.

A wheel install ships ``cc_runtime_bootstrap.pth`` (and ``cc_runtime.start``, PEP 829) at the top of
site-packages; an editable install (``pip install -e .``, PEP 660) gets them through ``setup.py``'s
hook on setuptools' ``editable_wheel``. Where neither ran (a setuptools without that hook, a copied
source tree, files removed by hand) spawned children are never activated; ``doctor`` reports that
(``bootstrap.installed``) and this command is the fix. The files do nothing unless
``CC_RUNTIME_BOOTSTRAP`` is set.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

PTH = "cc_runtime_bootstrap.pth"
START = "cc_runtime.start"
MODULE = "_cc_runtime_bootstrap"


def _source_dir() -> str:
    """Where the shipped copies live: the repository root (editable/source) or site-packages."""
    import importlib.util

    spec = importlib.util.find_spec(MODULE)
    if spec is not None and spec.origin:
        return os.path.dirname(os.path.abspath(spec.origin))
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def site_dirs() -> list[str]:
    """Directories whose .pth files this interpreter reads at start-up."""
    import site
    import sysconfig

    dirs: list[str] = []
    try:
        dirs += site.getsitepackages()
    except Exception:  # noqa: BLE001 - old virtualenvs lack it
        pass
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    dirs.append(sysconfig.get_paths()["purelib"])
    return [os.path.abspath(d) for d in dict.fromkeys(dirs)]


def info() -> dict[str, Any]:
    """``{installed, path, module_importable, expected_path, fix}`` for doctor."""
    import importlib.util
    import sysconfig

    found = [os.path.join(d, PTH) for d in site_dirs() if os.path.isfile(os.path.join(d, PTH))]
    try:
        module_ok = importlib.util.find_spec(MODULE) is not None
    except Exception:  # noqa: BLE001
        module_ok = False
    installed = bool(found) and module_ok
    out: dict[str, Any] = {
        "installed": installed,
        "path": found[0] if found else None,
        "module_importable": module_ok,
        "expected_path": os.path.join(sysconfig.get_paths()["purelib"], PTH),
        "fix": None,
    }
    if not installed:
        out["fix"] = ("spawned Python processes (SGLang's scheduler, compile workers) will not activate "
                      "cc_runtime unless they load the SGLang plugin; run `cc-runtime install-bootstrap` "
                      "(e.g. after an editable install whose setuptools lacks the hook setup.py uses) or use "
                      "`cc-runtime launch`")
    return out


def install(target: str | None = None) -> list[str]:
    """Copy the .pth and the .start (and the bootstrap module if it is not importable) into ``target``."""
    import importlib.util
    import shutil
    import sysconfig

    target = target or sysconfig.get_paths()["purelib"]
    src = _source_dir()
    names = [PTH, START]
    if importlib.util.find_spec(MODULE) is None:
        # Not importable (the editable finder maps it; a bare source tree may not): copy it too. Not
        # otherwise, so a stale copy never shadows the source.
        names.append(MODULE + ".py")
    written = []
    for name in names:
        from_path = os.path.join(src, name)
        if not os.path.isfile(from_path):
            raise FileNotFoundError(f"{from_path} is missing from this cc_runtime installation")
        dest = os.path.join(target, name)
        if os.path.abspath(from_path) != os.path.abspath(dest):
            shutil.copyfile(from_path, dest)
        written.append(dest)
    return written


def remove(target: str | None = None) -> list[str]:
    import sysconfig

    target = target or sysconfig.get_paths()["purelib"]
    removed = []
    for name in (PTH, START):
        path = os.path.join(target, name)
        if os.path.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


def add_parser(sub: Any) -> None:
    what = ("write the start-up bootstrap (.pth, .start) into site-packages; pip install (wheel or "
            "editable) already does, so only when `cc-runtime doctor` reports it missing")
    p = sub.add_parser("install-bootstrap", help=what, description=what + ".")
    p.add_argument("--target", metavar="DIR", help="site-packages directory (default: this interpreter's)")
    p.add_argument("--remove", action="store_true", help="remove the .pth and .start files instead")


def main(args: argparse.Namespace) -> int:
    try:
        paths = remove(args.target) if args.remove else install(args.target)
    except OSError as exc:
        print(f"cc-runtime install-bootstrap: {exc}", file=sys.stderr)
        return 1
    verb = "removed" if args.remove else "installed"
    for path in paths:
        print(f"{verb} {path}")
    if not paths:
        print("nothing to remove")
    return 0
