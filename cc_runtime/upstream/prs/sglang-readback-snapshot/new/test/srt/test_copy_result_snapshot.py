"""Results with hidden states (or DSpark accept lengths) take the async D2H worker.

Those fields are views of CUDA graph buffers that the next replay rewrites, so
the scheduler snapshots them on the device before handing the copy to the worker.
The tests check that the copy goes to the worker and that the values read back
are the ones of this step even when the graph buffer is rewritten before the
worker runs (the buffer is poisoned in between).

They run on CPU. Stand-ins, only for what a CPU cannot provide: the scheduler
is a namespace with the attributes `_copy_result_to_cpu` uses (streams and their
contexts are no-ops, the worker records what it is given and runs it when the
test says so); the "device" tensors are CPU tensors.
"""

import contextlib
import unittest
from types import SimpleNamespace

import torch

from sglang.srt.layers.logits_processor import LogitsProcessorOutput
from sglang.srt.managers.scheduler import Scheduler
from sglang.srt.managers.utils import GenerationBatchResult


class _Stream:
    def wait_stream(self, other):
        pass


class _CopyDone:
    def record(self):
        pass


class _Worker:
    def __init__(self):
        self.submitted = []

    def submit(self, fn):
        self.submitted.append(fn)
        return _CopyDone()

    def run_all(self):
        for fn in self.submitted:
            fn()


def _scheduler():
    return SimpleNamespace(
        enable_async_d2h_copy=True,
        device_module=SimpleNamespace(stream=lambda stream: contextlib.nullcontext()),
        forward_stream=_Stream(),
        forward_stream_ctx=contextlib.nullcontext(),
        copy_stream=_Stream(),
        copy_stream_ctx=contextlib.nullcontext(),
        async_d2h_worker=_Worker(),
    )


def _batch(return_hidden_states=False, dspark=False):
    return SimpleNamespace(
        return_logprob=False,
        return_hidden_states=return_hidden_states,
        spec_algorithm=SimpleNamespace(is_dspark=lambda: dspark),
    )


class TestCopyResultSnapshot(unittest.TestCase):
    def test_hidden_states_read_back_on_worker_from_a_snapshot(self):
        graph_hidden = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        want = graph_hidden.clone()
        result = GenerationBatchResult(
            logits_output=LogitsProcessorOutput(
                next_token_logits=None, hidden_states=graph_hidden
            ),
            next_token_ids=torch.tensor([1, 2, 3]),
        )
        result.copy_done = _CopyDone()
        scheduler = _scheduler()

        Scheduler._copy_result_to_cpu(
            scheduler, result, _batch(return_hidden_states=True)
        )

        self.assertEqual(len(scheduler.async_d2h_worker.submitted), 1)
        graph_hidden.fill_(float("nan"))  # the next replay rewrites the graph buffer
        scheduler.async_d2h_worker.run_all()
        self.assertTrue(torch.equal(result.logits_output.hidden_states, want))

    def test_dspark_accept_lens_read_back_on_worker_from_a_snapshot(self):
        graph_accept_lens = torch.tensor([3, 1, 2], dtype=torch.int32)
        result = GenerationBatchResult(
            logits_output=LogitsProcessorOutput(next_token_logits=None),
            next_token_ids=torch.tensor([1, 2, 3]),
            accept_lens=graph_accept_lens,
        )
        result.copy_done = _CopyDone()
        scheduler = _scheduler()

        Scheduler._copy_result_to_cpu(scheduler, result, _batch(dspark=True))

        self.assertEqual(len(scheduler.async_d2h_worker.submitted), 1)
        graph_accept_lens.fill_(-1)
        scheduler.async_d2h_worker.run_all()
        self.assertEqual(result.accept_lens.tolist(), [3, 1, 2])


if __name__ == "__main__":
    unittest.main()
