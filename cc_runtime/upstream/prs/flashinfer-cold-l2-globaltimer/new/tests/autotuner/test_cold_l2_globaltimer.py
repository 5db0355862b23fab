"""Cold-L2 autotuner profiling must follow the %globaltimer timer like the hot path.

Under NVIDIA Confidential Computing CUDA event timings can be wrong or negative, which is why the
AutoTuner times with %globaltimer there (``_use_global_timer``). These tests run the real
``AutoTuner._profile_single_kernel`` cold-L2 path without a GPU. Stand-ins, only for what a CPU
cannot provide: CUDA events that report a corrupted elapsed time (as CC can); a stamp function that
writes the host's nanosecond clock where the %globaltimer kernel would write the GPU's; the current
stream, ``torch.cuda.stream`` and the capture check; ``torch.empty`` ignoring ``device=`` (CPU
tensors); an input tensor that reports a CUDA device; and the L2 size.
"""

import contextlib
import time

import pytest
import torch

from flashinfer.autotuner import AutoTuner, TuningConfig


class _CorruptedEvent:
    def __init__(self, enable_timing=False):
        pass

    def record(self, stream=None):
        pass

    def elapsed_time(self, end_event):
        return -0.5


class _Stream:
    device = torch.device("cpu")

    def synchronize(self):
        pass


class _CudaLikeTensor(torch.Tensor):
    @property
    def is_cuda(self):
        return True

    @property
    def device(self):
        return torch.device("cuda", 0)


def _host_globaltimer(out):
    out[0] = time.perf_counter_ns()


@pytest.fixture
def tuner(monkeypatch):
    real_empty = torch.empty

    def empty(*args, device=None, **kwargs):
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch.cuda, "Event", _CorruptedEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    tuner = AutoTuner.get()
    monkeypatch.setattr(tuner, "_use_global_timer", True)
    monkeypatch.setattr(tuner, "_record_global_timer", _host_globaltimer)
    monkeypatch.setattr(tuner, "_get_l2_cache_size_in_bytes", lambda *a: 1024)
    monkeypatch.setattr(tuner, "stream_delay_micro_secs", 0)
    monkeypatch.setattr(tuner, "warmup", 1)
    return tuner


def _sleep_2ms(inputs, tactic=None, **kwargs):
    time.sleep(0.002)


def test_cold_l2_profile_uses_globaltimer(tuner):
    x = torch.Tensor._make_subclass(_CudaLikeTensor, torch.zeros(16))
    config = TuningConfig(use_cold_l2_cache=True)
    ms = tuner._profile_single_kernel(
        _sleep_2ms, [x], 0, config, input_tensor_batches=[[x]]
    )
    # time.sleep(0.002) takes at least 2 ms; the upper bound only rules out a wrong unit.
    assert 2.0 <= ms < 200.0
