"""pytest plugin for ``cc-runtime upstream check``: runs a staged PR's tests in one of three modes.

Loaded by path in a child process (never as part of the cc_runtime package), configured by the JSON in
``CC_UPSTREAM_CHECK_CONFIG``. Standard library only.

- ``pristine`` / ``patched``: cc_runtime must never be imported. A meta-path finder refuses it, and the
  session records whether any ``cc_runtime`` module got into ``sys.modules`` anyway. ``patched`` loads
  the modules the PR changes from the scratch tree (``modules``: name -> file) instead of the installed
  release.
- ``runtime``: the installed release, with cc_runtime activated before the tests import anything, so
  its runtime patch is what the tests see; the session records each named patch's status.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys

_CONFIG = json.loads(os.environ.get("CC_UPSTREAM_CHECK_CONFIG", "{}"))
_counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}


def _is_cc_runtime(name: str) -> bool:
    return name in ("cc_runtime", "_cc_runtime_bootstrap") or name.startswith("cc_runtime.")


class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201 - importlib's protocol
        if _is_cc_runtime(name):
            raise ImportError(f"{name}: a staged upstream test must run without cc_runtime")
        return None


class _Overlay(importlib.abc.MetaPathFinder):
    """Module name -> the patched file in the scratch tree (``packages``: name -> its search path)."""

    def __init__(self, modules: dict, packages: dict) -> None:
        self.modules = modules
        self.packages = packages

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        file = self.modules.get(name)
        if file is None:
            return None
        return importlib.util.spec_from_file_location(
            name, file, submodule_search_locations=self.packages.get(name))


def pytest_configure(config) -> None:  # noqa: ANN001
    mode = _CONFIG.get("mode")
    if mode in ("pristine", "patched"):
        sys.meta_path.insert(0, _Refuse())
        if mode == "patched":
            sys.meta_path.insert(0, _Overlay(_CONFIG.get("modules", {}), _CONFIG.get("packages", {})))
    elif mode == "runtime":
        import cc_runtime  # noqa: F401 - activates (CC forced on, only the PR's runtime patches allowed)


def pytest_runtest_logreport(report) -> None:  # noqa: ANN001
    if report.when == "call" or report.outcome != "passed":
        key = {"passed": "passed", "failed": "failed" if report.when == "call" else "errors",
               "skipped": "skipped"}[report.outcome]
        _counts[key] += 1


def pytest_collectreport(report) -> None:  # noqa: ANN001
    if report.failed:
        _counts["errors"] += 1


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ANN001
    result = {"mode": _CONFIG.get("mode"), "exitstatus": int(exitstatus), **_counts,
              "cc_runtime_imported": sorted(m for m in sys.modules if _is_cc_runtime(m))}
    if _CONFIG.get("mode") == "runtime":
        from cc_runtime.runtime import manager

        records = manager().records
        result["patches"] = {n: (records[n].status if n in records else "unknown")
                             for n in _CONFIG.get("runtime_patches", [])}
    with open(_CONFIG["result"], "w") as fh:
        json.dump(result, fh)
