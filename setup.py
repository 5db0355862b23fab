"""Only what pyproject.toml cannot express: shipping the start-up bootstrap into site-packages.

``cc_runtime_bootstrap.pth`` (and ``cc_runtime.start`` for Python >= 3.15, PEP 829) must sit at the top
of site-packages, outside any package, for the interpreter to read them at start-up. They do nothing
unless CC_RUNTIME_BOOTSTRAP=1 (see cc_runtime/_bootstrap.py). Same approach as pytest-cov.
"""

from __future__ import annotations

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

STARTUP_FILES = ("cc_runtime_bootstrap.pth", "cc_runtime.start")


class BuildPyWithStartup(build_py):
    def run(self) -> None:
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        for name in STARTUP_FILES:
            self.copy_file(os.path.join(here, name), os.path.join(self.build_lib, name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, n) for n in STARTUP_FILES]


setup(
    packages=find_packages(include=["cc_runtime", "cc_runtime.*"]) + ["cc_runtime.kernels"],
    py_modules=["_cc_runtime_bootstrap"],
    cmdclass={"build_py": BuildPyWithStartup},
)
