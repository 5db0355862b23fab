"""GenerationBatchResult.copy_to_cpu reads a step's tensors back in one transfer.

Under NVIDIA Confidential Computing every device-to-host copy is a bounce-buffer
crossing with a fixed cost, and a step reads back several tensors. These tests
run on CPU. Stand-ins, only for what a CPU cannot provide: the "device" tensors
are CPU tensors, the copy primitive (managers.utils._async_d2h) is wrapped to
count the transfers, and copy_done is a stand-in for the CUDA event.
"""

import unittest
from unittest import mock

import torch

import sglang.srt.managers.scheduler  # noqa: F401  # the overlap scheduler copies results
from sglang.srt.layers.logits_processor import LogitsProcessorOutput
from sglang.srt.managers import utils as managers_utils
from sglang.srt.managers.utils import GenerationBatchResult


class _CopyDone:
    def __init__(self):
        self.recorded = 0

    def record(self):
        self.recorded += 1


def _make_result(batch_size=3, top_k=2):
    gen = torch.Generator().manual_seed(0)
    logits_output = LogitsProcessorOutput(
        next_token_logits=None,
        next_token_logprobs=torch.randn(batch_size, generator=gen),
        next_token_top_logprobs_val=[
            torch.randn(top_k, generator=gen) for _ in range(batch_size)
        ],
        next_token_top_logprobs_idx=[
            torch.randint(0, 1000, (top_k,), generator=gen) for _ in range(batch_size)
        ],
    )
    result = GenerationBatchResult(
        logits_output=logits_output,
        next_token_ids=torch.randint(0, 1000, (batch_size,), generator=gen),
    )
    result.copy_done = _CopyDone()
    return result


def _snapshot(result):
    out = result.logits_output
    return [
        result.next_token_ids.clone(),
        out.next_token_logprobs.clone(),
        *[v.clone() for v in out.next_token_top_logprobs_val],
        *[i.clone() for i in out.next_token_top_logprobs_idx],
    ]


class TestCopyToCpuCoalesced(unittest.TestCase):
    def setUp(self):
        self.transfers = 0
        real = managers_utils._async_d2h

        def counting_d2h(tensor):
            self.transfers += 1
            return real(tensor)

        patcher = mock.patch.object(managers_utils, "_async_d2h", counting_d2h)
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_one_transfer_per_step(self):
        result = _make_result()
        result.copy_to_cpu(return_logprob=True)
        self.assertLessEqual(self.transfers, 1)
        self.assertEqual(result.copy_done.recorded, 1)

    def test_host_values_match_device_values(self):
        result = _make_result()
        want = _snapshot(result)
        result.copy_to_cpu(return_logprob=True)
        got = _snapshot(result)
        self.assertEqual(len(got), len(want))
        for g, w in zip(got, want):
            self.assertEqual(g.dtype, w.dtype)
            self.assertEqual(g.shape, w.shape)
            self.assertTrue(torch.equal(g, w))


if __name__ == "__main__":
    unittest.main()
