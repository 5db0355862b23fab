"""Under Confidential Computing, async_h2d / async_h2d_stack copy on a side stream.

Under CC a host-to-device copy waits for everything queued before it on its
stream (a whole forward pass on the forward stream). These tests run on CPU.
Stand-ins, only for what a CPU cannot provide: the "meta" device plays the GPU,
torch.get_device_module returns a fake device module whose streams record what
happens to them, Tensor.record_stream is recorded, and CC is forced on with
SGLANG_FORCE_CONFIDENTIAL_COMPUTE=1.
"""

import contextlib
import os
import unittest
from unittest import mock

import torch

from sglang.srt.utils import common


class _Stream:
    def __init__(self, name):
        self.name = name
        self.waited_for = []

    def wait_stream(self, other):
        self.waited_for.append(other)


class _DeviceModule:
    def __init__(self):
        self.current = _Stream("current")
        self.side_streams = []
        self.entered = []

    def current_stream(self, device=None):
        return self.current

    def Stream(self, device=None):
        stream = _Stream("side")
        self.side_streams.append(stream)
        return stream

    @contextlib.contextmanager
    def stream(self, stream):
        self.entered.append(stream)
        yield


class TestAsyncH2DConfidentialCompute(unittest.TestCase):
    def setUp(self):
        self.device_module = _DeviceModule()
        self.recorded = []

        def record_stream(tensor, stream):
            self.recorded.append(stream)

        for patcher in (
            mock.patch.dict(os.environ, {"SGLANG_FORCE_CONFIDENTIAL_COMPUTE": "1"}),
            mock.patch.object(
                torch, "get_device_module", lambda device=None: self.device_module
            ),
            mock.patch.object(torch.Tensor, "record_stream", record_stream),
        ):
            patcher.start()
            self.addCleanup(patcher.stop)
        common.is_confidential_compute.cache_clear()
        self.addCleanup(common.is_confidential_compute.cache_clear)

    def _assert_staged(self, out, shape):
        self.assertEqual(out.device.type, "meta")
        self.assertEqual(tuple(out.shape), shape)
        self.assertEqual(len(self.device_module.entered), 1)
        side = self.device_module.entered[0]
        self.assertIsNot(side, self.device_module.current)
        self.assertEqual(self.device_module.current.waited_for, [side])
        self.assertIn(self.device_module.current, self.recorded)

    def test_async_h2d_copies_on_a_side_stream(self):
        out = common.async_h2d([1, 2, 3], dtype=torch.int64, device=torch.device("meta"))
        self.assertEqual(out.dtype, torch.int64)
        self._assert_staged(out, (3,))

    def test_async_h2d_stack_copies_on_a_side_stream(self):
        out = common.async_h2d_stack(
            [torch.tensor([1, 2]), torch.tensor([3, 4])], device=torch.device("meta")
        )
        self._assert_staged(out, (2, 2))


if __name__ == "__main__":
    unittest.main()
