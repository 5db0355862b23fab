"""Coalesced readback: layout, one crossing, host views, every dtype/shape incl. empty (simulated device)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cc_runtime.readback import ALIGN, ReadbackWorker, plan, read_coalesced, unpack
from cc_runtime.readback.backend import backend_for

pytestmark = pytest.mark.timeout(120)

DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.float32,
          torch.float64, torch.float16, torch.bfloat16, torch.complex64]


def _sample(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -1000), min(info.max, 1000), shape, generator=g, dtype=torch.int64).to(dtype)


def _on_device(sim, t: torch.Tensor) -> torch.Tensor:
    return sim.mark_device(t.clone())


def test_plan_aligns_every_segment_and_never_overlaps():
    ts = [torch.zeros(3, dtype=torch.int8), torch.zeros((), dtype=torch.float64), torch.zeros(0, dtype=torch.int32),
          torch.zeros((2, 5), dtype=torch.float16)]
    layout = plan(ts)
    end = 0
    for t, seg in zip(ts, layout.segments, strict=True):
        assert seg.offset % ALIGN == 0 and seg.offset >= end
        assert seg.nbytes == t.numel() * t.element_size()
        end = seg.offset + seg.nbytes
    assert layout.nbytes >= end and layout.nbytes % ALIGN == 0
    with pytest.raises(ValueError):
        plan(ts, align=3)


def test_a_decode_step_crosses_once_and_unpacks_as_views(sim_cc):
    bs = 256
    step = {
        "next_token_ids": torch.randint(0, 150_000, (bs,), dtype=torch.int64),
        "next_token_logprobs": torch.randn(bs),
        "top_logprobs_val": torch.randn(bs, 5),
        "top_logprobs_idx": torch.randint(0, 150_000, (bs, 5), dtype=torch.int32),
        "accept_lens": torch.ones(bs, dtype=torch.int32),
    }
    dev = [_on_device(sim_cc, t) for t in step.values()]
    backend = backend_for(sim_cc)
    hosts = read_coalesced(dev, backend=backend)
    assert backend.transfers == 1
    for want, got in zip(step.values(), hosts, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got, want)
        assert not sim_cc.is_device(got)
        assert got.data_ptr() % want.element_size() == 0
    storages = {h.untyped_storage().data_ptr() for h in hosts}
    assert len(storages) == 1, "host results must be views of one buffer"


def test_non_tensors_and_host_tensors_pass_through_untouched(sim_off):
    host = torch.arange(3)
    dev = _on_device(sim_off, torch.arange(4))
    out = read_coalesced([None, host, 5, dev], backend=backend_for(sim_off))
    assert out[0] is None and out[1] is host and out[2] == 5
    assert torch.equal(out[3], torch.arange(4))
    assert read_coalesced([host, None]) == [host, None]  # no device tensors, no backend needed


def test_large_tensors_cross_alone_and_small_ones_together(sim_off):
    backend = backend_for(sim_off)
    small = [_on_device(sim_off, torch.arange(8)), _on_device(sim_off, torch.ones(4))]
    big = _on_device(sim_off, torch.arange(4096, dtype=torch.float32))
    out = read_coalesced([small[0], big, small[1]], backend=backend, max_coalesce_bytes=1024)
    assert backend.transfers == 2
    assert torch.equal(out[1], torch.arange(4096, dtype=torch.float32))
    assert torch.equal(out[0], torch.arange(8)) and torch.equal(out[2], torch.ones(4))


def test_non_contiguous_inputs_and_all_empty(sim_off):
    backend = backend_for(sim_off)
    base = torch.arange(24, dtype=torch.int32).reshape(4, 6)
    dev_t = _on_device(sim_off, base).t()  # non-contiguous view registered? mark the view itself
    sim_off.mark_device(dev_t)
    empty = _on_device(sim_off, torch.zeros((0, 7)))
    out = read_coalesced([dev_t, empty], backend=backend)
    assert torch.equal(out[0], base.t()) and out[1].shape == (0, 7)
    before = backend.transfers
    only_empty = read_coalesced([_on_device(sim_off, torch.zeros(0)), _on_device(sim_off, torch.zeros((0, 2)))],
                                backend=backend)
    assert backend.transfers == before and [t.shape for t in only_empty] == [(0,), (0, 2)]


def test_worker_and_coalescing_together(sim_cc):
    src = [_on_device(sim_cc, torch.arange(10)), _on_device(sim_cc, torch.linspace(0, 1, 10))]
    with ReadbackWorker(sim_cc) as worker:
        ids, lps = worker.submit_coalesced(src).result
    assert torch.equal(ids, torch.arange(10)) and torch.equal(lps, torch.linspace(0, 1, 10))
    assert worker.backend.transfers == 1


_shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(st.tuples(st.sampled_from(DTYPES), _shapes), min_size=1, max_size=8),
       seed=st.integers(0, 2**16))
def test_roundtrip_any_dtype_mix_and_shape(sim_off, specs, seed):
    wants = [_sample(dt, shape, seed + i) for i, (dt, shape) in enumerate(specs)]
    backend = backend_for(sim_off)
    got = read_coalesced([_on_device(sim_off, w) for w in wants], backend=backend)
    assert backend.transfers <= 1
    for w, g in zip(wants, got, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape and torch.equal(g, w)


@given(specs=st.lists(st.tuples(st.sampled_from(DTYPES), _shapes), min_size=1, max_size=8))
@settings(max_examples=50, deadline=None)
def test_unpack_of_a_packed_host_buffer_is_exact(specs):
    # The host half alone: byte image of each tensor at its planned offset -> unpack gives it back.
    wants = [_sample(dt, shape, i) for i, (dt, shape) in enumerate(specs)]
    layout = plan(wants)
    buf = torch.zeros(layout.nbytes, dtype=torch.uint8)
    for w, seg in zip(wants, layout.segments, strict=True):
        if seg.nbytes:
            buf[seg.offset: seg.offset + seg.nbytes] = w.reshape(-1).view(torch.uint8)
    for w, g in zip(wants, unpack(buf, layout), strict=True):
        assert torch.equal(g, w)


@pytest.mark.gpu
def test_cuda_roundtrip_and_worker():
    """Real GPU: one crossing for a decode step's outputs, through the worker and inline."""
    dev = torch.device("cuda")
    ts = [torch.randint(0, 1000, (64,), device=dev), torch.randn(64, device=dev),
          torch.randn(64, 5, device=dev).t(), torch.zeros(0, device=dev, dtype=torch.int32)]
    backend = backend_for(torch.cuda)
    inline = read_coalesced(ts, backend=backend)
    assert backend.transfers == 1
    with ReadbackWorker(torch.cuda) as worker:
        via_worker = worker.submit_coalesced(ts).result
    for t, a, b in zip(ts, inline, via_worker, strict=True):
        assert torch.equal(t.cpu(), a) and torch.equal(t.cpu(), b)


def test_strided_tensors_roundtrip_including_a_strided_1d_one(sim_cc):
    # A 1-D strided tensor stays strided under reshape(-1), and a strided tensor cannot be viewed as
    # bytes: the pack kernel must make it contiguous first (it failed the whole readback before).
    backend = backend_for(sim_cc)
    base = torch.arange(40, dtype=torch.int64)
    wants = [base[::2], torch.arange(12, dtype=torch.float32).reshape(3, 4).t(), torch.arange(6, dtype=torch.int16)]
    got = read_coalesced([_on_device(sim_cc, w) if w.is_contiguous() else sim_cc.mark_device(w) for w in wants],
                         backend=backend)
    assert backend.transfers == 1
    for w, g in zip(wants, got, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape and torch.equal(g, w)


def test_signatures_that_alternate_each_get_their_own_layout(sim_off):
    # Layouts are cached by (dtype, shape) signature: same dtypes, different shapes must not share one.
    backend = backend_for(sim_off)
    for step in range(6):
        bs = (1, 7, 256)[step % 3]
        wants = [torch.full((bs,), step, dtype=torch.int64), torch.full((bs, 5), -step, dtype=torch.float32),
                 torch.full((bs,), step, dtype=torch.int32)]
        got = read_coalesced([_on_device(sim_off, w) for w in wants], backend=backend)
        for w, g in zip(wants, got, strict=True):
            assert g.shape == w.shape and torch.equal(g, w)


def test_fast_unpack_falls_back_for_a_buffer_that_is_not_one_read_coalesced_allocated():
    # read_coalesced cuts its host buffer with one dtype view per dtype; a buffer one byte longer than
    # the layout has no int64 view, so it must be cut segment by segment, giving the same views.
    from cc_runtime.readback.coalesce import _recipe, _unpack

    wants = [torch.arange(3, dtype=torch.int64), torch.arange(5, dtype=torch.float16), torch.ones((2, 3))]
    layout = plan(wants)
    for extra in (0, 1):
        buf = torch.zeros(layout.nbytes + extra, dtype=torch.uint8)
        for w, seg in zip(wants, layout.segments, strict=True):
            buf[seg.offset: seg.offset + seg.nbytes] = w.reshape(-1).view(torch.uint8)
        for w, g in zip(wants, _unpack(buf, layout, _recipe(layout)), strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape and torch.equal(g, w)
