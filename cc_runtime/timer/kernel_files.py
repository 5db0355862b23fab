"""Where the PTX kernels live: the ``cc_runtime.kernels`` package when installed, ``<repo>/kernels`` in a
source tree that was never installed (the package maps that directory under another name, see pyproject)."""

from __future__ import annotations

from pathlib import Path


class KernelFileError(FileNotFoundError):
    """A kernel file that cc_runtime ships could not be found (broken install)."""


def _source_tree_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "kernels"


def read_kernel(name: str) -> str:
    """The text of kernel file ``name`` (e.g. ``"globaltimer.ptx"``)."""
    try:
        from importlib.resources import files

        resource = files("cc_runtime.kernels").joinpath(name)
        if resource.is_file():
            return resource.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, TypeError):
        pass
    path = _source_tree_dir() / name
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise KernelFileError(f"cc_runtime kernel file {name!r} not found in cc_runtime.kernels nor {path.parent}")
