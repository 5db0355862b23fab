"""The CC emulator: CC's costs and semantics on any GPU, and a simulated device on CPU-only machines.

- :mod:`.profiles`: the profiles (``h100``, ``b300``, ``off``, user or calibrated JSON): costs and
  semantic switches, each with its source. The cost model (``Profile.copy_cost_s``) needs no hooks.
- :mod:`.events`: seeded corruption of event timings.
- :mod:`.simdevice` (+ :mod:`.simstream`): :class:`SimDevice`, a CUDA-like device made of CPU threads
  (results "simulated").
- :mod:`.cuda`: ``emulate(profile)``, the torch hooks that give a real GPU CC's costs ("emulated");
  the code is in :mod:`.charge` (what is charged, in which order), :mod:`.tensor_hooks`,
  :mod:`.dispatch_mode` and :mod:`.install`.
- :mod:`.bindings`: ``install_refusals(ctx, profile, ...)``: ``cudaHostRegister`` / ``cuMemHostRegister``
  fail with 801 and multicast creation with "not supported", on torch's cudart and cuda-python's
  runtime and driver bindings (or binding modules you pass).

Nothing here imports torch at import time.
"""

from __future__ import annotations

from .bindings import install_refusals
from .events import EventCorruption
from .profiles import BUILTIN, OFF, SWITCHES, Profile, ProfileError, load_profile, profile_names
from .simdevice import SimDevice, SimDeviceError, SimEvent, SimGraph, SimStream

__all__ = ["BUILTIN", "OFF", "SWITCHES", "EventCorruption", "Profile", "ProfileError", "SimDevice", "SimDeviceError",
           "SimEvent", "SimGraph", "SimStream", "install_refusals", "load_profile", "profile_names"]
