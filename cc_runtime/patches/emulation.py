"""CC emulator hooks for torch, installed when ``CC_RUNTIME_EMULATE=<profile>`` (CC state ``emulated``).

Why: CC hardware is scarce; every other capability must be testable and measurable without it.
How: on ``import torch``, :func:`cc_runtime.emulator.cuda.install` makes host<->device copies
host-synchronous with the profile's costs, charges eager launches and graph replays, corrupts CUDA
event timings and makes ``cudaHostRegister`` fail (see that module). Children inherit
``CC_RUNTIME_EMULATE`` through the environment and install the same hooks. Refused under real CC
(detection then reports ``on``, not ``emulated``, and this patch is not wanted).
Upstream: none; this is cc_runtime's own test instrument. Way back: ``cc_runtime.deactivate()``.
"""

from __future__ import annotations

from typing import Any

from ..patching import NotApplicable, Patch

#: The Emulator installed by this patch (None when not applied); ``cc_runtime.emulator.cuda.active()``.
EMULATOR: Any = None
#: Tests on CPU put a stand-in backend here (``cc_runtime.emulator.cuda.StandInBackend``); None = CUDA.
BACKEND_FOR_TESTS: Any = None


def _apply(ctx: Any) -> None:
    import torch

    from ..detect import cc_state
    from ..emulator.cuda import install

    global EMULATOR
    state = cc_state()
    backend = BACKEND_FOR_TESTS
    if backend is None and torch.version.cuda is None:
        # Nothing to hook (no CUDA copies or launches exist), so not a failure; the CC-gated patches
        # still apply under the emulated state.
        raise NotApplicable(f"torch {torch.__version__} has no CUDA build, so there are no CUDA copies or "
                            "launches to emulate; CPU-only code can use the simulated device "
                            "(cc_runtime.emulator.SimDevice)")
    EMULATOR = install(ctx, state.profile, backend=backend)

    def forget() -> None:
        global EMULATOR
        EMULATOR = None

    ctx.on_revert(forget)


PATCHES: list[Patch] = [
    Patch(
        name="emulation",
        target="torch",
        versions=">=2.4",
        summary="CC emulator: host-synchronous copies with CC costs, launch and graph-replay costs, "
                "corrupted event timings, failing host registration",
        upstream="none (cc_runtime's own emulator)",
        apply=_apply,
        module="torch",
        when=lambda s: s.source == "emulated",
        # On a CPU serving device there is no CUDA work to charge, and the dispatch hook would still
        # cost time on every CPU op (halving a CPU server's throughput): not applicable there.
        needs_cuda_device=True,
        why="lets every CC fix be tested and benchmarked on a GPU without CC (and refuses under real CC)",
    ),
]
