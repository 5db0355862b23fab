"""Registry of every cc_runtime patch. Each module below defines ``PATCHES: list[Patch]``.

Patch modules must import nothing heavy at top level (no torch, no target library): they are loaded
by ``import cc_runtime`` in every process, CC or not. The targets are imported by the post-import hooks.
"""

from __future__ import annotations

import importlib
import logging

from ..patching import Patch

log = logging.getLogger("cc_runtime.patches")

# Order matters only for logs and for revert (reverse order).
PATCH_MODULES = (
    "upstream_env",          # export the CC decision to SGLang's and FlashInfer's own switches
    "emulation",             # the CC emulator's torch hooks (only when emulating)
    "triton_timer",          # Triton do_bench / autotune benchmarker -> globaltimer
    "inductor_timer",        # torch inductor max-autotune benchmarker -> globaltimer
    "flashinfer_timer",      # FlashInfer AutoTuner timer and CC detection gap
    "sglang_readback",       # async, coalesced D2H readback in SGLang's overlap scheduler
    "sglang_d2h_worker_waits",  # SGLang 0.5.23's own D2H worker: blocking-sync waits, no spinning core
    "sglang_prefill_graphs", # prefill / mixed CUDA graphs in SGLang under CC
    "sglang_hicache",        # HiCache host KV pools without cudaHostRegister; IO backend kernel -> direct
    "sglang_allreduce_fusion",  # opt-in: FlashInfer allreduce+RMSNorm fusion on the multicast-free workspace
    "sglang_readback_snapshot", # graph-aliasing readback fields snapshotted on the device, then read async
    "sglang_staging",        # per-step host->device inputs staged in one crossing on a side stream
    "sglang_loading",        # weights cross in large chunks (cc_runtime.loading), not one copy per tensor
)


def all_patches() -> list[Patch]:
    patches: list[Patch] = []
    for name in PATCH_MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except Exception as exc:  # noqa: BLE001 - one broken patch module must not disable the rest
            log.error("cc_runtime: patch module %s failed to import: %s", name, exc)
            continue
        patches.extend(getattr(mod, "PATCHES", []))
    return patches
