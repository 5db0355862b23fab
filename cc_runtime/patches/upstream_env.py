"""Export cc_runtime's CC decision to upstream's own switches, so their CC code paths agree with ours.

SGLang 0.5.23 reads ``SGLANG_FORCE_CONFIDENTIAL_COMPUTE`` (its async D2H worker and pageable staging
turn on under CC); FlashInfer >= 0.6.16 reads ``FLASHINFER_CONFIDENTIAL_COMPUTE`` (0|1, anything else
raises) and ``FLASHINFER_AUTOTUNE_TIMER`` when its AutoTuner singleton is built. Without this, forced or
emulated CC would leave upstream on its CC-off paths, and protected-PCIe machines (which FlashInfer's
own detection misses) would keep CUDA-event autotuning. A value the user set is never overwritten: a
disagreement is logged instead. Set in the launching process, so spawned schedulers inherit it.
"""

from __future__ import annotations

import logging
import os

from ..patching import Patch, PatchContext
from ..settings import get as get_setting

log = logging.getLogger("cc_runtime.patches.upstream_env")


def _export(ctx: PatchContext, name: str, value: str) -> None:
    current = os.environ.get(name)
    if current is None:
        ctx.setenv(name, value)
    elif current != value:
        log.warning("cc_runtime: %s=%s set by the user disagrees with cc_runtime's %s; keeping the user's value",
                    name, current, value)


def _apply_sglang(ctx: PatchContext) -> None:
    _export(ctx, "SGLANG_FORCE_CONFIDENTIAL_COMPUTE", "1")


def _apply_flashinfer(ctx: PatchContext) -> None:
    _export(ctx, "FLASHINFER_CONFIDENTIAL_COMPUTE", "1")
    timer = get_setting("CC_RUNTIME_TIMER")
    _export(ctx, "FLASHINFER_AUTOTUNE_TIMER", "cuda_event" if timer == "cuda_event" else "globaltimer")


PATCHES = [
    Patch(
        name="sglang.cc_env",
        target="sglang",
        versions=">=0.5.23",  # the switch (and SGLang's own CC paths) first shipped in 0.5.23
        summary="SGLANG_FORCE_CONFIDENTIAL_COMPUTE=1 so SGLang's own CC paths (D2H worker, pageable staging) agree",
        upstream="SGLang is_confidential_compute (0.5.23); env override SGLANG_FORCE_CONFIDENTIAL_COMPUTE",
        apply=_apply_sglang,
        why="forced/emulated CC and any detection difference would otherwise leave SGLang on CC-off paths",
    ),
    Patch(
        name="flashinfer.cc_env",
        target="flashinfer-python",
        versions=">=0.6.16",
        summary="FLASHINFER_CONFIDENTIAL_COMPUTE=1, FLASHINFER_AUTOTUNE_TIMER=globaltimer before the AutoTuner exists",
        upstream="FlashInfer PR 3638/3870 (globaltimer autotuning under CC)",
        fixed_in="flashinfer-python 0.6.16 (ccFeature only; protected PCIe still missed)",
        apply=_apply_flashinfer,
        why="FlashInfer's detection misses protected-PCIe mode and knows nothing of forced/emulated CC",
    ),
]
