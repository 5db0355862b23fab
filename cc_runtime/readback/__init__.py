"""Asynchronous, coalesced device->host readback (see worker.py and coalesce.py).

Imports nothing heavy: torch is imported inside the functions that need it.
"""

from .backend import DeviceBackend, DeviceModuleBackend, SimDeviceBackend, backend_for
from .coalesce import ALIGN, Layout, Segment, pack, plan, read_coalesced, unpack
from .worker import CopyDone, ReadbackError, ReadbackShutdownError, ReadbackWorker

__all__ = [
    "ALIGN", "CopyDone", "DeviceBackend", "DeviceModuleBackend", "Layout", "ReadbackError",
    "ReadbackShutdownError", "ReadbackWorker", "Segment", "SimDeviceBackend", "backend_for", "pack", "plan",
    "read_coalesced", "unpack",
]
