"""Activation in processes that did not ``import cc_runtime`` themselves (spawned children).

Called from ``cc_runtime_bootstrap.pth`` (and ``cc_runtime.start`` on Python >= 3.15, PEP 829) at
interpreter start-up, and from the ``sitecustomize`` that ``cc-runtime launch`` puts on PYTHONPATH.
Start-up code must be cheap and must never raise: it runs in every Python process of the environment,
pip and the multiprocessing resource tracker included, and it can run twice in one process (a venv's
lib64 symlink makes site read the same .pth twice).

It is a top-level module, not ``cc_runtime._bootstrap``, because importing anything inside the package
runs ``cc_runtime/__init__`` (which activates); this module must be importable without activating, so
the start-up hooks can check the gate first.

The gate (:func:`requested`) is the one place outside ``cc_runtime.settings`` that looks at a
``CC_RUNTIME_*`` variable: it only decides whether to import cc_runtime at all. Any value other than
unset, empty or ``0`` imports it, and cc_runtime then validates every setting (``CC_RUNTIME_BOOTSTRAP``
included) and prints one line, changing nothing, if one is invalid.
"""

from __future__ import annotations

import os

VAR = "CC_RUNTIME_BOOTSTRAP"


def requested() -> bool:
    return os.environ.get(VAR, "").strip() not in ("", "0")


def run() -> None:
    if not requested():
        return
    try:
        import cc_runtime  # noqa: F401 - importing activates (once per process: modules are cached)
    except SystemExit as exc:
        # The preflight refused (CC_RUNTIME_PREFLIGHT=require; its line is printed): SystemExit escaping
        # site at start-up would be a "Fatal Python error" and a traceback instead of the one line.
        import sys

        sys.stderr.flush()
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    except Exception as exc:  # noqa: BLE001 - a start-up hook that raises breaks every Python process
        if getattr(exc, "cc_runtime_strict", False):
            # CC_RUNTIME_STRICT=1 and activation failed (already reported and rolled back): a strict
            # deployment must not run unpatched. SystemExit raised while site runs the .pth at start-up
            # becomes "Fatal Python error: init_import_site" and a traceback; the report line is enough.
            import sys

            sys.stderr.flush()
            os._exit(1)
        import sys

        print(f"cc_runtime bootstrap: cc_runtime could not be imported, this process runs without it: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
