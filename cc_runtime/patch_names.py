"""The name of every registered patch, as plain data on the ground floor of the package.

``settings`` validates ``CC_RUNTIME_PATCHES`` against these names, so it never imports the patch
registry (``patches`` -> ``patching`` -> ``settings`` would be a circle, and validating a setting would
load every patch module). A test checks that this list and the registry agree: adding a patch means
adding its name here, one line.
"""

PATCH_NAMES: tuple[str, ...] = (
    "sglang.cc_env",
    "flashinfer.cc_env",
    "emulation",
    "triton.autotune_timer",
    "inductor.benchmarker_timer",
    "flashinfer.autotuner_timer_legacy",
    "flashinfer.globaltimer_kernel",
    "flashinfer.cold_l2_timer",
    "flashinfer.cc_detect",
    "sglang.readback_worker",
    "sglang.readback_coalesce",
    "sglang.prefill_graphs_0_5_12",
    "sglang.prefill_graphs_0_5_23",
    "sglang.hicache_host_pool",
    "sglang.hicache_host_pool_inline",
    "sglang.hicache_io_backend",
    "sglang.allreduce_fusion_ipc",
    "sglang.readback_snapshot_worker",
    "sglang.readback_snapshot",
    "sglang.h2d_staging",
    "sglang.h2d_staging_primitives",
    "sglang.d2h_worker_blocking_waits",
    "sglang.loading",
)
