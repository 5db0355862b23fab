"""H2DStager on the emulator's simulated device (real stream threads, CC's host-synchronous copies)."""

from __future__ import annotations

import threading
import time

import pytest

torch = pytest.importorskip("torch")

from cc_runtime.staging import H2DStager, StagingError  # noqa: E402


def _host(sim, t):
    return sim.to_host(t)


def test_mixed_inputs_cross_once_and_arrive_exactly(sim_cc):
    st = H2DStager(sim_cc)
    items = [[1, 2, 3], [0.5, -2.25], torch.arange(7, dtype=torch.int32), torch.tensor([True, False]),
             torch.arange(6, dtype=torch.float16).view(2, 3), []]
    dtypes = [torch.int64, torch.float32, None, None, None, torch.int64]
    before = sim_cc.stats["copies_h2d"]
    out = st.stage(items, dtypes).tensors()
    assert sim_cc.stats["copies_h2d"] - before == 1
    want = [torch.tensor([1, 2, 3]), torch.tensor([0.5, -2.25]), torch.arange(7, dtype=torch.int32),
            torch.tensor([True, False]), torch.arange(6, dtype=torch.float16).view(2, 3), torch.tensor([], dtype=torch.int64)]
    for w, g in zip(want, out, strict=True):
        assert sim_cc.is_device(g)
        h = _host(sim_cc, g)
        assert (h.dtype, tuple(h.shape)) == (w.dtype, tuple(w.shape)) and torch.equal(h, w)


def test_staging_does_not_wait_behind_the_queued_forward(sim_cc, gate):
    st = H2DStager(sim_cc)
    fwd = sim_cc.Stream(name="forward")
    seen = []
    with sim_cc.stream(fwd):
        sim_cc.launch(gate.wait, 0.0)  # the forward still running
        t0 = time.perf_counter()
        ins = st.stage([[7] * 4, [3.0] * 4], [torch.int64, torch.float32]).tensors()
        sim_cc.launch(lambda: seen.append((ins[0].tolist(), ins[1].tolist())), 0.0)  # the next forward reads
        returned_s = time.perf_counter() - t0
    assert returned_s < 5 and not seen  # returned while the forward was blocked
    gate.open()
    fwd.synchronize()
    assert seen == [([7] * 4, [3.0] * 4)]


def test_consumer_stream_waits_for_a_copy_still_queued_on_the_side_stream(sim_off, gate):
    st = H2DStager(sim_off, cc=True, non_blocking=True)  # pinned: the copy is queued, not inline
    with sim_off.stream(st.stream):
        sim_off.launch(gate.wait, 0.0)  # the side stream is busy: the copy queues behind this
    consumer = sim_off.Stream(name="consumer")
    seen = []
    with sim_off.stream(consumer):
        staged = st.stage([[5, 6, 7], [1]], torch.int64)
        assert not staged.query()
        views = staged.views()
        sim_off.launch(lambda: seen.append(views[0].tolist()), 0.0)
        staged.release()
    time.sleep(0.05)
    assert not seen, "the consumer ran before the copy it waits for"
    gate.open()
    consumer.synchronize()
    assert seen == [[5, 6, 7]]


def test_slot_is_not_reused_while_a_slow_consumer_still_reads_it(sim_off, gate):
    st = H2DStager(sim_off, cc=True, slots=1, max_slots=1, non_blocking=True)
    consumer = sim_off.Stream(name="consumer")
    seen = []
    with sim_off.stream(consumer):
        first = st.stage([[1, 1, 1], [9]], torch.int64)
        v1 = first.views()
        sim_off.launch(gate.wait, 0.0)  # the consumer is slow to read the slot
        sim_off.launch(lambda: seen.append(v1[0].tolist()), 0.0)
        first.release()
        second = st.stage([[2, 2, 2], [8]], torch.int64)  # one slot only: must wait on the device
        v2 = second.views()
        sim_off.launch(lambda: seen.append(v2[0].tolist()), 0.0)
        second.release()
    gate.open()
    consumer.synchronize()
    assert seen == [[1, 1, 1], [2, 2, 2]]


def test_ring_grows_instead_of_waiting_when_a_slot_is_busy(sim_off, gate):
    st = H2DStager(sim_off, cc=True, slots=1, max_slots=4, non_blocking=True)
    consumer = sim_off.Stream(name="consumer")
    with sim_off.stream(consumer):
        a = st.stage([[1], [2]], torch.int64)
        a.views()
        sim_off.launch(gate.wait, 0.0)
        a.release()
        b = st.stage([[3], [4]], torch.int64)
        assert st.slots == 2  # a second slot, not a wait behind the gated consumer
        b.synchronize()  # the copy itself did not wait for the consumer either
        out = b.tensors()
    gate.open()
    consumer.synchronize()
    assert [t.tolist() for t in out] == [[3], [4]]


def test_failed_copy_surfaces_where_the_inputs_are_consumed(sim_cc):
    st = H2DStager(sim_cc)

    def broken(*args, **kwargs):
        raise RuntimeError("uncorrectable ECC error")

    st.backend.copy_to_device = broken  # type: ignore[method-assign]
    staged = st.stage([[1, 2], [3]], torch.int64)  # stage itself does not raise
    with pytest.raises(StagingError) as info:
        staged.tensors()
    assert "uncorrectable ECC error" in str(info.value.__cause__)
    with pytest.raises(StagingError):
        staged.synchronize()


def test_off_cc_it_is_a_plain_copy_on_the_current_stream(sim_off):
    st = H2DStager(sim_off)
    assert not st.cc
    staged = st.stage([[1, 2], [3.5]], [torch.int64, torch.float32])
    assert staged.passthrough and staged.query()
    assert [_host(sim_off, t).tolist() for t in staged.tensors()] == [[1, 2], [3.5]]
    assert sim_off.stats["copies_h2d"] == 2 and sim_off.stats["copies_d2d"] == 0


def test_one_tiny_tensor_on_an_idle_stream_is_a_plain_copy_and_on_a_busy_one_is_staged(sim_cc, gate):
    st = H2DStager(sim_cc)
    assert st.stage([[4]], torch.int64).passthrough
    fwd = sim_cc.Stream(name="forward")
    with sim_cc.stream(fwd):
        sim_cc.launch(gate.wait, 0.0)
        staged = st.stage([[4]], torch.int64)
        assert not staged.passthrough
        out = staged.tensors()
    gate.open()
    fwd.synchronize()
    assert _host(sim_cc, out[0]).tolist() == [4]


def test_never_stages_inside_graph_capture(sim_cc):
    st = H2DStager(sim_cc)
    g = sim_cc.Graph()
    with sim_cc.capture(g):
        assert st.backend.is_capturing()
        assert st.should_pass_through([torch.zeros(2), torch.zeros(3)])
    assert not st.should_pass_through([torch.zeros(2), torch.zeros(3)])


def test_device_tensors_are_refused():
    from cc_runtime.staging import host_tensors

    with pytest.raises(ValueError, match="host inputs"):
        host_tensors([torch.empty(2, device="meta")])


def test_concurrent_stagers_keep_every_stage_separate(sim_cc):
    """Two threads stage three inputs at a time, so every call goes through the ring (one input on an
    idle stream would pass straight through) and the two threads share its two slots."""
    st = H2DStager(sim_cc, slots=2, max_slots=2)
    errors = []

    def worker(k: int) -> None:
        for i in range(10):
            v = k * 100 + i
            staged = st.stage([[v] * 3, [v + 0.5], torch.tensor([v], dtype=torch.int32)],
                              [torch.int64, torch.float32, None])
            out = staged.tensors()
            got = [_host(sim_cc, t).tolist() for t in out]
            if got != [[v] * 3, [v + 0.5], [v]]:
                errors.append((k, i, got))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert (st.staged, st.passed_through) == (20, 0)


@pytest.mark.parametrize("n", [3, 5, 9])
def test_stage_several_then_read_in_any_order_each_gets_its_own_bytes(sim_cc, n):
    st = H2DStager(sim_cc, wait_s=0.01)  # default 2 slots, up to 8: the 9th waits, then copies plainly
    staged = [st.stage([[k] * 4, [k + 0.25]], [torch.int64, torch.float32]) for k in range(n)]
    order = list(range(n))[1::2] + list(range(n))[::-2]
    for k in order:
        got = staged[k].views() if k % 2 else staged[k].tensors()
        assert [_host(sim_cc, t).tolist() for t in got] == [[k] * 4, [k + 0.25]], f"stage {k} read other bytes"
        staged[k].release()
    assert st.staged + st.passed_through == n and st.slots <= st.max_slots
    assert st.passed_through == max(0, n - st.max_slots)


def test_a_slot_stays_reserved_until_its_inputs_are_consumed(sim_cc):
    st = H2DStager(sim_cc, slots=1, max_slots=1, wait_s=0.01)
    first = st.stage([[1, 1], [2]], torch.int64)
    second = st.stage([[3, 3], [4]], torch.int64)  # the only slot is still first's: a plain copy
    assert second.passthrough and st.passed_through == 1
    assert [_host(sim_cc, t).tolist() for t in first.views()] == [[1, 1], [2]]
    first.release()
    third = st.stage([[5, 5], [6]], torch.int64)
    assert not third.passthrough
    assert [_host(sim_cc, t).tolist() for t in third.tensors()] == [[5, 5], [6]]


def test_host_buffer_is_not_repacked_while_its_copy_is_still_queued(sim_off, gate):
    st = H2DStager(sim_off, cc=True, slots=1, max_slots=1, non_blocking=True)
    with sim_off.stream(st.stream):
        sim_off.launch(gate.wait, 0.0)  # the first copy stays queued, its host buffer unread
    consumer = sim_off.Stream(name="consumer")
    with sim_off.stream(consumer):
        a = st.stage([[1, 1, 1], [0]], torch.int64).tensors()
        b = st.stage([[2, 2, 2], [0]], torch.int64).tensors()  # the only slot: a new host buffer
    gate.open()
    consumer.synchronize()
    assert (a[0].tolist(), b[0].tolist()) == ([1, 1, 1], [2, 2, 2])


def test_a_plain_copy_reads_the_host_bytes_before_it_returns(sim_off, gate):
    """Pass-through and fall-back copies, like staged ones, leave the caller free to reuse its host tensor."""
    st = H2DStager(sim_off, cc=True, slots=1, max_slots=1, wait_s=0.01)
    consumer = sim_off.Stream(name="consumer")
    host = torch.tensor([1, 2, 3])
    with sim_off.stream(consumer):
        sim_off.launch(gate.wait, 0.0)  # a queued copy would read the host tensor only after this
        held = st.stage([[0], [0]], torch.int64)  # holds the only slot: the next stage falls back
        out = st.stage([host, [7]], [None, torch.int64])
        host.fill_(-1)
    assert out.passthrough and st.fallbacks == 1
    gate.open()
    consumer.synchronize()
    assert _host(sim_off, out.tensors()[0]).tolist() == [1, 2, 3]
    held.release()


def test_a_failed_copy_gives_its_slot_back(sim_cc):
    st = H2DStager(sim_cc, slots=1, max_slots=1, wait_s=0.01)
    good = st.backend.copy_to_device

    def broken(*args, **kwargs):
        raise RuntimeError("uncorrectable ECC error")

    st.backend.copy_to_device = broken  # type: ignore[method-assign]
    failed = st.stage([[1], [2]], torch.int64)  # still referenced: only the failure may free its slot
    with pytest.raises(StagingError):
        failed.tensors()
    st.backend.copy_to_device = good  # type: ignore[method-assign]
    again = st.stage([[3], [4]], torch.int64)
    assert not again.passthrough and [_host(sim_cc, t).tolist() for t in again.tensors()] == [[3], [4]]
