"""CC's costs and semantics on a real CUDA GPU that is not in CC mode ("emulated" results).

While emulation is active, in every thread of the process:

- **Host<->device copies made through torch** (``Tensor.to``, ``.copy_``, ``.cpu()``, ``.cuda()``,
  ``.item()``, ``.tolist()``, ``torch.tensor(data, device=)``, ``torch.as_tensor``, and in threads
  with the launch mode any ``aten._to_copy``/``copy_`` across devices; ``non_blocking`` or not) become host-synchronous as CC makes them: the
  calling thread waits for the current stream's earlier work, makes the copy, waits for it, and
  returns once ``profile.copy_cost_s(nbytes, direction, pinned)`` has passed (pinned or pageable host
  memory; pageable H2D per ``profile.pageable_h2d_blocking``; copies from different streams one at a
  time per ``profile.copies_serialize_across_streams``). The simulated device follows the same model.
  The cost is a calibrated GIL-releasing wait, not real AES-GCM: see :mod:`.clock` for why.
- **Eager kernel launches** pay ``profile.launch_extra_s``. The hook is a ``TorchDispatchMode`` (it sees
  every aten and custom op that reaches the dispatcher with a device tensor; views and allocations
  launch nothing and are not charged). Dispatch modes are thread-local, so the mode is pushed in the
  thread that enables emulation and, through a wrapper on ``threading.Thread._bootstrap_inner``, in
  every thread started afterwards. The hook's own per-op Python cost (measured at install on host
  tensors, ``Emulator.hook_overhead_s``) counts toward the extra launch cost instead of adding to it;
  where the hook alone costs more than the profile's extra, the emulated launch costs more than
  the model (the bench reports ``launch_hook_overhead_us``).
  Limitations: threads started *before* emulation was enabled (in other threads) are not charged for
  launches (their copies still are: copy hooks are global); kernels launched without the dispatcher
  (Triton JIT kernels, CUDA graphs' nodes, inductor's generated launches) are not charged per launch;
  the mode declares ``ignore_compile_internals`` so ``torch.compile`` still compiles.
- **CUDA graph replay** (``torch.cuda.CUDAGraph.replay``) pays ``profile.graph_replay_extra_s`` once.
- **Event timing**: ``torch.cuda.Event.elapsed_time`` results are corrupted per the profile (seeded,
  some negative). ``torch.Event`` (the device-generic C type) cannot be patched and is not corrupted.
- **Host registration and multicast** (:mod:`.bindings`): ``cudaHostRegister`` returns error 801
  through ``torch.cuda.cudart()``, cuda-python's runtime binding (and the legacy ``cuda.cudart``) and
  ``cuMemHostRegister`` through its driver binding; ``cuMulticastCreate`` / ``cuMulticastGetGranularity``
  return CUDA_ERROR_NOT_SUPPORTED. ``pin_memory()`` keeps working, as it does under real CC
  (``cudaHostAlloc`` is allowed; it just buys nothing because copies go through the bounce buffer).

While a torch-function mode is active in a thread that has the launch mode, the method hooks leave
copies to the dispatcher (``Emulator.charged_at_dispatch``): the mode may answer a ``.to("cpu")``
without copying (cc_runtime's coalescing readback), and only copies that happen may be charged.
Copies made during CUDA-graph capture are passed through untouched (a host sync is illegal there).
Refused when real CC is on (the costs would be counted twice). Everything is installed through a
:class:`~cc_runtime.patching.PatchContext`, so disabling restores every patched object exactly.
The CPU-side logic (what gets charged, the blocking order) runs against any ``backend`` object with
``device_type``, ``current_stream(device)``, ``is_capturing()`` and ``default_device(index)``; the
tests use the meta device with a simulated stream as a stand-in for CUDA.

This module is the stable import point; the code lives in :mod:`.charge` (what is charged, in which
order), :mod:`.tensor_hooks`, :mod:`.dispatch_mode`, :mod:`.bindings` and :mod:`.install`.
"""

from __future__ import annotations

from .bindings import CUDA_ERROR_NOT_SUPPORTED, HostRegisterRefusingCudart, install_refusals
from .charge import CudaBackend, EmulationRefused, Emulator, StandInBackend
from .clock import wait_s, wait_until
from .install import active, check_allowed, disable, emulate, enable, install
from .tensor_hooks import hook_copy_ as _hook_copy_
from .tensor_hooks import hook_cuda as _hook_cuda
from .tensor_hooks import hook_d2h as _hook_d2h
from .tensor_hooks import hook_factory as _hook_factory
from .tensor_hooks import hook_to as _hook_to

__all__ = ["CUDA_ERROR_NOT_SUPPORTED", "CudaBackend", "EmulationRefused", "Emulator", "HostRegisterRefusingCudart",
           "StandInBackend", "active", "check_allowed", "disable", "emulate", "enable", "install",
           "install_refusals", "wait_s", "wait_until", "_hook_copy_", "_hook_cuda", "_hook_d2h", "_hook_factory",
           "_hook_to"]
