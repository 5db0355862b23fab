"""HiCache under NVIDIA Confidential Computing (CC): host pools without
cudaHostRegister, and the direct io backend.

CC refuses cudaHostRegister with error 801, and device kernels cannot read host
memory through UVA there. These tests run on CPU. Stand-ins, only for what a CPU
cannot provide: torch.cuda.cudart() is a fake whose cudaHostRegister fails with
801 as under CC (and records the calls); CC is forced on with
SGLANG_FORCE_CONFIDENTIAL_COMPUTE=1; the device KV pool lives on the CPU.
"""

import os
import unittest
from types import SimpleNamespace
from unittest import mock

import torch

from sglang.srt.utils.common import is_confidential_compute

PAGE_SIZE = 4


class _CCRefusingCudart:
    """torch.cuda.cudart() as under CC: cudaHostRegister fails with 801."""

    def __init__(self):
        self.registered = []

    def cudaHostRegister(self, ptr, size, flags):
        self.registered.append(size)
        return 801

    def cudaHostUnregister(self, ptr):
        return 0

    def cudaGetErrorString(self, rc):
        return "operation not supported"


class TestHiCacheConfidentialCompute(unittest.TestCase):
    def setUp(self):
        self.cudart = _CCRefusingCudart()
        for patcher in (
            mock.patch.dict(os.environ, {"SGLANG_FORCE_CONFIDENTIAL_COMPUTE": "1"}),
            mock.patch.object(torch.cuda, "cudart", lambda: self.cudart),
        ):
            patcher.start()
            self.addCleanup(patcher.stop)
        is_confidential_compute.cache_clear()
        self.addCleanup(is_confidential_compute.cache_clear)

    def test_host_pool_is_created_without_cuda_host_register(self):
        from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool
        from sglang.srt.mem_cache.pool_host.mha import MHATokenToKVPoolHost

        device_pool = MHATokenToKVPool(
            64, PAGE_SIZE, torch.float16, 2, 8, 3, "cpu", False,
            start_layer=0, end_layer=2,
        )
        host_pool = MHATokenToKVPoolHost(
            device_pool.get_device_pool_infos()[0].buffer_info,
            2,
            0,
            PAGE_SIZE,
            "layer_first",
            device_capacity_tokens=device_pool.size,
            start_layer=device_pool.start_layer,
            end_layer=device_pool.end_layer,
            write_back_staging=device_pool.hicache_write_back_staging,
        )
        self.assertEqual(self.cudart.registered, [])
        self.assertIsNotNone(host_pool.kv_buffer)

    def _resolve(self, io_backend, mem_layout):
        import sglang.srt.server_args  # noqa: F401  # resolution runs under ServerArgs
        from sglang.srt.arg_groups import hicache_hook

        args = SimpleNamespace(
            hicache_io_backend=io_backend, hicache_mem_layout=mem_layout
        )
        hicache_hook.resolve_layout_io_compatibility(args)
        view = hicache_hook.resolving_view(args)
        return view.hicache_io_backend, view.hicache_mem_layout

    def test_kernel_io_backend_switches_to_direct(self):
        self.assertEqual(
            self._resolve("kernel", "page_first"), ("direct", "page_first_direct")
        )
        self.assertEqual(
            self._resolve("kernel", "layer_first"), ("direct", "layer_first")
        )

    def test_direct_io_backend_is_kept(self):
        self.assertEqual(
            self._resolve("direct", "layer_first"), ("direct", "layer_first")
        )


if __name__ == "__main__":
    unittest.main()
