"""What each patch has been verified against, so a user can tell a patch proven on hardware from one
proven only on a CPU. Shown by ``cc-runtime patches`` and in docs/patches.md's patch table.

Three levels, each a list of plain statements the project can back with a file in this repository:

* ``cpu``: the real upstream code, imported and patched on a CPU-only machine (the nox ``tests`` and
  ``upstream-*`` sessions): which versions, through which tests;
* ``gpu``: a GPU run: the device and the result file under ``benchmarks/results/<device>/``, computed
  from the committed results by :mod:`cc_runtime.patching.gpu_evidence` (never typed here);
* ``cc_hardware``: a GPU with Confidential Computing on: the device and the result file.

Update a ``cpu`` entry when a new session verifies a patch; an empty level reads "none yet".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Evidence:
    cpu: tuple[str, ...] = ()
    gpu: tuple[str, ...] = ()
    cc_hardware: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"cpu": list(self.cpu), "gpu": list(self.gpu), "cc_hardware": list(self.cc_hardware)}

    def level(self) -> str:
        """The strongest level reached: ``cc-hardware``, ``gpu``, ``cpu`` or ``none``."""
        return "cc-hardware" if self.cc_hardware else "gpu" if self.gpu else "cpu" if self.cpu else "none"

    def summary(self) -> str:
        def part(label: str, items: tuple[str, ...]) -> str:
            return f"{label}: " + ("; ".join(items) if items else "none yet")

        return " / ".join((part("CPU", self.cpu), part("GPU", self.gpu), part("CC hardware", self.cc_hardware)))


NONE = Evidence()

# The nox sessions that import and patch the real upstream code (noxfile.py pins the versions).
_SG23 = "SGLang 0.5.23 (nox upstream-0.5.23)"
_SG12 = "SGLang 0.5.12 (nox upstream-0.5.12)"
_FI072 = "flashinfer-python 0.7.2.post1 (nox upstream-0.5.23)"
_FI0611 = "flashinfer-python 0.6.11.post1 (nox upstream-0.5.12)"
_TARGETS = "tests/upstream/test_patch_targets.py"
_HICACHE = "tests/upstream/test_sglang_hicache_upstream.py"
_FUSION = "tests/upstream/test_sglang_allreduce_fusion_upstream.py"
_SNAPSHOT = "tests/readback/test_readback_snapshot_upstream.py"

EVIDENCE: dict[str, Evidence] = {
    "sglang.cc_env": Evidence(cpu=(f"{_SG23}: {_TARGETS}",)),
    "flashinfer.cc_env": Evidence(cpu=(f"{_FI072}: {_TARGETS}",)),
    "emulation": Evidence(cpu=("torch 2.13.0 CPU (nox tests): tests/emulator/test_emulator_patch.py",)),
    "triton.autotune_timer": Evidence(cpu=(
        "Triton 3.6.0 (nox tests): tests/timer/test_timer_patches_triton_inductor.py",
        f"Triton 3.8.0 (nox upstream-0.5.23): {_TARGETS}")),
    "inductor.benchmarker_timer": Evidence(cpu=(
        "torch 2.13.0 inductor (nox tests): tests/timer/test_timer_patches_triton_inductor.py",
        f"torch 2.14.1 inductor (nox upstream-*): {_TARGETS}")),
    "flashinfer.autotuner_timer_legacy": Evidence(cpu=(
        f"{_FI0611}: tests/timer/test_timer_patches_flashinfer.py, {_TARGETS}",)),
    "flashinfer.globaltimer_kernel": Evidence(cpu=(f"{_FI072}: tests/timer/test_timer_patches_flashinfer.py",)),
    "flashinfer.cold_l2_timer": Evidence(cpu=(f"{_FI072}: tests/timer/test_timer_patches_flashinfer.py",)),
    "flashinfer.cc_detect": Evidence(cpu=(f"{_FI072}: tests/timer/test_timer_patches_flashinfer.py",)),
    "sglang.readback_worker": Evidence(cpu=(f"{_SG12}: tests/readback/test_readback_sglang_upstream.py",)),
    "sglang.readback_coalesce": Evidence(cpu=(f"{_SG23}: tests/readback/test_readback_sglang_upstream.py",)),
    "sglang.d2h_worker_blocking_waits": Evidence(cpu=(f"{_SG23}: tests/readback/test_d2h_worker_waits_upstream.py",)),
    "sglang.prefill_graphs_0_5_12": Evidence(cpu=(
        f"{_SG12}: tests/graphs/test_sglang_prefill_graphs_upstream.py",)),
    "sglang.prefill_graphs_0_5_23": Evidence(cpu=(
        f"{_SG23}: tests/graphs/test_sglang_prefill_graphs_upstream.py",)),
    "sglang.hicache_host_pool": Evidence(cpu=(f"{_SG23}: {_HICACHE}",)),
    "sglang.hicache_host_pool_inline": Evidence(cpu=(f"{_SG12}: {_HICACHE}",)),
    "sglang.hicache_io_backend": Evidence(cpu=(f"{_SG12}: {_HICACHE}", f"{_SG23}: {_HICACHE}")),
    # The FlashInfer side (the IPC workspace kind reaching the allocator) only on 0.5.23: FlashInfer
    # 0.6.11.post1's flashinfer.comm does not import on a CPU (it needs cuda.tile).
    "sglang.allreduce_fusion_ipc": Evidence(cpu=(
        f"{_SG12}: {_FUSION} (SGLang's side)",
        f"{_SG23}, {_FI072}: {_FUSION}")),
    "sglang.readback_snapshot_worker": Evidence(cpu=(f"{_SG12}: {_SNAPSHOT}",)),
    "sglang.readback_snapshot": Evidence(cpu=(f"{_SG23}: {_SNAPSHOT}",)),
    "sglang.h2d_staging": Evidence(cpu=(f"{_SG12}: tests/staging/test_staging_sglang_upstream.py, "
                                       "tests/staging/test_staging_sglang_step_upstream.py",)),
    "sglang.h2d_staging_primitives": Evidence(cpu=(f"{_SG23}: tests/staging/test_staging_sglang_upstream.py, "
                                                   "tests/staging/test_staging_sglang_step_upstream.py",)),
    "sglang.loading": Evidence(cpu=(f"{_SG12}: tests/upstream/test_sglang_loading_upstream.py",
                                    f"{_SG23}: tests/upstream/test_sglang_loading_upstream.py")),
}


def evidence_for(name: str) -> Evidence:
    from dataclasses import replace

    from .gpu_evidence import gpu_evidence

    ev = EVIDENCE.get(name, NONE)
    return replace(ev, gpu=gpu_evidence(name))  # from benchmarks/results/<gpu device>/, never by hand
