"""Activation in processes that did not ``import cc_runtime`` themselves (spawned children).

Called from ``cc_runtime_bootstrap.pth`` (and ``cc_runtime.start`` on Python >= 3.15, PEP 829) at
interpreter start-up, and from the ``sitecustomize`` that ``cc-runtime launch`` puts on PYTHONPATH.
Start-up code must be cheap and must never raise: it runs in every Python process of the environment,
pip and the multiprocessing resource tracker included, and it can run twice in one process (a venv's
lib64 symlink makes site read the same .pth twice).

It is a top-level module, not ``cc_runtime._bootstrap``, because importing anything inside the package
runs ``cc_runtime/__init__`` (which activates); this module must be importable without activating, so
the PEP 829 ``.start`` entry point can check the variable first.
"""

from __future__ import annotations

import os

VAR = "CC_RUNTIME_BOOTSTRAP"


def run() -> None:
    if os.environ.get(VAR) != "1" or os.environ.get("CC_RUNTIME_DISABLE") == "1":
        return
    try:
        import logging

        level = os.environ.get("CC_RUNTIME_LOG_LEVEL", "").upper()
        if level in ("DEBUG", "INFO", "WARNING", "ERROR"):
            logging.getLogger("cc_runtime").setLevel(level)
        import cc_runtime  # noqa: F401 - importing activates (once per process: modules are cached)
    except BaseException:  # noqa: BLE001 - a start-up hook that raises breaks every Python process
        if os.environ.get("CC_RUNTIME_STRICT") == "1":
            raise
