"""Only what pyproject.toml cannot express: shipping the start-up bootstrap into site-packages.

``cc_runtime_bootstrap.pth`` (and ``cc_runtime.start`` for Python >= 3.15, PEP 829) must sit at the top
of site-packages, outside any package, for the interpreter to read them at start-up. They do nothing
unless CC_RUNTIME_BOOTSTRAP is set (see _cc_runtime_bootstrap.py). Same approach as pytest-cov.

Regular installs get them through ``build_py``. Editable installs (``pip install -e``, PEP 660) do not
run ``build_py`` into the wheel, so ``editable_wheel`` is extended too. That hook is setuptools-internal;
if a setuptools release drops it, ``cc-runtime doctor`` reports the missing bootstrap and
``cc-runtime install-bootstrap`` writes it.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

STARTUP_FILES = ("cc_runtime_bootstrap.pth", "cc_runtime.start")
HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithStartup(build_py):
    def run(self) -> None:
        super().run()
        for name in STARTUP_FILES:
            self.copy_file(os.path.join(HERE, name), os.path.join(self.build_lib, name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, n) for n in STARTUP_FILES]


cmdclass: dict[str, Any] = {"build_py": BuildPyWithStartup}

try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # setuptools < 64: editable installs go through develop (egg-link), no PEP 660
    editable_wheel = None

if editable_wheel is not None and hasattr(editable_wheel, "_install_namespaces"):

    class EditableWheelWithStartup(editable_wheel):  # type: ignore[misc, valid-type]
        def _install_namespaces(self, installation_dir: Any, pth_prefix: Any) -> None:
            # The one step that writes into the editable wheel's root, which installs into
            # site-packages (setuptools puts its own namespace .pth files there the same way).
            super()._install_namespaces(installation_dir, pth_prefix)
            for name in STARTUP_FILES:
                shutil.copyfile(os.path.join(HERE, name), os.path.join(str(installation_dir), name))

    cmdclass["editable_wheel"] = EditableWheelWithStartup


setup(
    packages=find_packages(include=["cc_runtime", "cc_runtime.*"]) + ["cc_runtime.kernels"],
    py_modules=["_cc_runtime_bootstrap"],
    cmdclass=cmdclass,
)
