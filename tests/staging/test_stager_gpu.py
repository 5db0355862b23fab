"""H2DStager on a real CUDA GPU: stream ordering, slot reuse under a slow consumer, capture safety.

``torch.cuda._sleep`` keeps a stream busy for a known number of cycles, so ordering is checked by what
a later kernel reads, not by timing. CC is forced on in the stager (``cc=True``) so it stages even on a
GPU without CC; copies are pinned and non_blocking, so they really are queued.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cc_runtime.staging import H2DStager  # noqa: E402

pytestmark = pytest.mark.gpu

SLOW = 200_000_000  # cycles: ~0.1 s on a ~2 GHz GPU


def _stager(**kw):
    return H2DStager("cuda", cc=True, pin_memory=True, **kw)


def test_consumer_reads_the_copy_even_when_it_is_queued_behind_other_side_stream_work():
    st = _stager()
    with torch.cuda.stream(st.stream):
        torch.cuda._sleep(SLOW)  # the copy below queues behind this
    consumer = torch.cuda.Stream()
    with torch.cuda.stream(consumer):
        host = torch.arange(4096, dtype=torch.int64)
        staged = st.stage([host, [1.5, 2.5]], [None, torch.float32])
        host.fill_(-1)  # the caller may reuse its host tensor at once: the stager packed a copy
        ids, vals = staged.tensors()
        total = ids.sum()  # queued on the consumer stream, after its wait on the copy
    consumer.synchronize()
    assert total.item() == sum(range(4096)) and vals.tolist() == [1.5, 2.5]


def test_producing_stream_order_is_kept_for_the_consumer():
    st = _stager()
    producer = torch.cuda.current_stream()
    out = torch.zeros(8, dtype=torch.int64, device="cuda")
    torch.cuda._sleep(SLOW)  # producer busy: the staged tensors must not be read before it reaches them
    staged = st.stage([list(range(8))], torch.int64)
    (t,) = staged.tensors()  # D2D queued on the producer stream itself
    out.copy_(t)
    producer.synchronize()
    assert out.tolist() == list(range(8))


def test_slot_is_not_overwritten_while_a_slow_consumer_reads_it():
    st = _stager(slots=1, max_slots=1)
    consumer = torch.cuda.Stream()
    with torch.cuda.stream(consumer):
        first = st.stage([[7] * 1024], torch.int64)
        (v1,) = first.views()
        torch.cuda._sleep(SLOW)  # the consumer reads the slot late
        seen1 = v1.clone()
        first.release()
        second = st.stage([[9] * 1024], torch.int64)  # the only slot: must wait for the read above
        (v2,) = second.views()
        seen2 = v2.clone()
        second.release()
    consumer.synchronize()
    assert seen1.eq(7).all().item() and seen2.eq(9).all().item()


def test_never_stages_inside_graph_capture():
    st = _stager()
    host = torch.arange(16, dtype=torch.int64).pin_memory()
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        with torch.cuda.graph(g, stream=s):
            assert st.backend.is_capturing()
            staged = st.stage([host])
            (t,) = staged.tensors()
            doubled = t * 2
    assert staged.passthrough, "inside capture the stager must step aside (plain, capturable copy)"
    assert st.staged == 0
    g.replay()
    torch.cuda.synchronize()
    assert doubled.tolist() == [2 * i for i in range(16)]


def test_pinned_host_buffer_is_not_repacked_while_its_copy_is_queued():
    st = _stager(slots=1, max_slots=1)
    with torch.cuda.stream(st.stream):
        torch.cuda._sleep(SLOW)  # the first copy stays queued, reading its pinned buffer later
    consumer = torch.cuda.Stream()
    with torch.cuda.stream(consumer):
        (a,) = st.stage([[1] * 4096], torch.int64).tensors()
        (b,) = st.stage([[2] * 4096], torch.int64).tensors()
    consumer.synchronize()
    assert a.eq(1).all().item() and b.eq(2).all().item()
