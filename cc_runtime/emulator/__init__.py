"""The CC emulator: CC's costs and semantics on any GPU, and a simulated device on CPU-only machines.

- :mod:`.profiles`: the cost profiles (``h100``, ``b300``, ``off``, user JSON) with their sources.
- :mod:`.events`: seeded corruption of event timings.
- :mod:`.simdevice`: :class:`SimDevice`, a CUDA-like device made of CPU threads (results "simulated").
- :mod:`.cuda`: ``emulate(profile)``, the torch hooks that give a real GPU CC's costs ("emulated").

Nothing here imports torch at import time.
"""

from __future__ import annotations

from .events import EventCorruption
from .profiles import BUILTIN, OFF, Profile, ProfileError, load_profile, profile_names
from .simdevice import SimDevice, SimDeviceError, SimEvent, SimGraph, SimStream

__all__ = ["BUILTIN", "OFF", "EventCorruption", "Profile", "ProfileError", "SimDevice", "SimDeviceError",
           "SimEvent", "SimGraph", "SimStream", "load_profile", "profile_names"]
