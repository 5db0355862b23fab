"""Export cc_runtime's CC decision to upstream's own switches, so their CC code paths agree with ours.

SGLang 0.5.23 reads ``SGLANG_FORCE_CONFIDENTIAL_COMPUTE`` (its async D2H worker and pageable staging
turn on under CC); FlashInfer >= 0.6.16 reads ``FLASHINFER_CONFIDENTIAL_COMPUTE`` (0|1, anything else
raises) and ``FLASHINFER_AUTOTUNE_TIMER`` when its AutoTuner singleton is built. Without this, forced or
emulated CC would leave upstream on its CC-off paths, and protected-PCIe machines (which FlashInfer's
own detection misses) would keep CUDA-event autotuning. A value the user set is never overwritten: a
disagreement is reported instead (:func:`cc_runtime.status_file.warn`: stderr and the process's status
file, because it happens before SGLang configures logging, where a log record would be lost). Set in
the launching process, so spawned schedulers inherit it.

``sglang.cc_env`` applies when ``sglang`` is imported, not at activation: only then is the serving
device known in a spawned child (:mod:`cc_runtime.patching.device`), and SGLang's CC paths are CUDA
only (its D2H worker synchronizes a CUDA stream): on ``--device cpu`` the switch stays unset.
"""

from __future__ import annotations

import os

from ..patching import Patch, PatchContext
from ..settings import get as get_setting


def _export(ctx: PatchContext, name: str, value: str) -> None:
    current = os.environ.get(name)
    if current is None:
        ctx.setenv(name, value)
    elif current != value:
        from ..status_file import warn

        warn(f"cc_runtime: {name}={current} set by the user disagrees with cc_runtime's {value}; "
             "keeping the user's value")


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
        module="sglang",  # once the device is known (spawned children: after sys.argv is restored)
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
