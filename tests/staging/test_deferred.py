"""deferred_h2d: fresh host->device tensors made in a scope cross together, before their first use.

The simulated device lives on torch's "cpu" device, so the scope's target is "cpu" here (as the SGLang
patch tests bind it); host tensors are the ones the device has not registered.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cc_runtime.staging import H2DStager  # noqa: E402
from cc_runtime.staging.deferred import deferred_h2d  # noqa: E402


def _is_target(dev) -> bool:
    return str(dev) == "cpu"


def test_creations_before_use_cross_once(sim_cc):
    st = H2DStager(sim_cc)
    before = sim_cc.stats["copies_h2d"]
    with deferred_h2d(st, _is_target) as c:
        a = torch.tensor([1, 2, 3], dtype=torch.int64).to("cpu", non_blocking=True)
        b = torch.tensor([0.5, 1.5], device="cpu")
        d = torch.tensor([7], dtype=torch.int32).to(device="cpu")
        assert c.deferred == 3 and c.flushes == 0
    assert c.flushes == 1 and sim_cc.stats["copies_h2d"] - before == 1
    assert all(sim_cc.is_device(t) for t in (a, b, d))
    assert a.tolist() == [1, 2, 3] and b.tolist() == [0.5, 1.5] and d.tolist() == [7]


def test_first_use_flushes_so_reads_inside_the_scope_see_the_data(sim_cc):
    st = H2DStager(sim_cc)
    with deferred_h2d(st, _is_target) as c:
        a = torch.tensor([1, 2, 3]).to("cpu")
        x = a + 1  # reads a: flush first
        assert c.flushes == 1
        e = torch.tensor([4]).to("cpu")
        ptr_before = c.flushes
        e.data_ptr()  # what Triton's launcher calls: a flush too
        assert c.flushes == ptr_before + 1
    assert x.tolist() == [2, 3, 4] and e.tolist() == [4]


def test_metadata_reads_do_not_flush(sim_cc):
    st = H2DStager(sim_cc)
    with deferred_h2d(st, _is_target) as c:
        a = torch.tensor([[1, 2], [3, 4]]).to("cpu")
        assert a.shape == (2, 2) and len(a) == 2 and a.dtype == torch.int64 and a.numel() == 4
        assert c.flushes == 0
    assert a.tolist() == [[1, 2], [3, 4]]


def test_nested_scopes_join_the_outer_one(sim_cc):
    st = H2DStager(sim_cc)
    with deferred_h2d(st, _is_target) as outer:
        a = torch.tensor([1]).to("cpu")
        with deferred_h2d(st, _is_target) as inner:
            b = torch.tensor([2]).to("cpu")
        assert inner is outer and outer.flushes == 0
    assert outer.flushes == 1 and (a.tolist(), b.tolist()) == ([1], [2])


def test_copies_into_existing_buffers_and_large_tensors_run_as_written(sim_cc):
    st = H2DStager(sim_cc)
    with deferred_h2d(st, _is_target, max_bytes=64) as c:
        big = torch.arange(100, dtype=torch.int64).to("cpu")  # 800 B > max_bytes
        buf = torch.zeros(4, dtype=torch.int64)
        buf[:2].copy_(torch.tensor([5, 6]))
    assert c.deferred == 0 and big.tolist() == list(range(100)) and buf.tolist() == [5, 6, 0, 0]


def test_pending_copies_are_flushed_when_the_scope_raises(sim_cc):
    st = H2DStager(sim_cc)
    with pytest.raises(KeyError), deferred_h2d(st, _is_target) as c:
        a = torch.tensor([9, 9]).to("cpu")
        raise KeyError("builder failed")
    assert c.flushes == 1 and a.tolist() == [9, 9]


def test_other_devices_are_left_alone(sim_cc):
    st = H2DStager(sim_cc)
    with deferred_h2d(st, lambda dev: str(dev) == "cuda:0") as c:
        a = torch.tensor([1]).to("cpu")
    assert c.deferred == 0 and not sim_cc.is_device(a)


def test_views_of_placeholders_stay_deferred_and_flush_on_their_first_read(sim_cc):
    st = H2DStager(sim_cc)
    with deferred_h2d(st, _is_target) as c:
        t = torch.tensor([0.5, 1.5], dtype=torch.float32).to("cpu").view(-1, 1)  # SGLang's temperatures
        k = torch.tensor([3, 4], dtype=torch.int32).to("cpu")
        assert c.flushes == 0
        doubled = t * 2  # reads the view: flush
        assert c.flushes == 1
    assert doubled.tolist() == [[1.0], [3.0]] and k.tolist() == [3, 4]


def test_a_resident_tensor_is_not_staged_again(sim_cc):
    """``.to(device)`` of a tensor already on the device is the tensor itself (as for a cuda tensor): no copy."""
    st = H2DStager(sim_cc)
    with deferred_h2d(st, _is_target):
        a = torch.tensor([1, 2, 3]).to("cpu")
    before = sim_cc.stats["copies_h2d"]
    with deferred_h2d(st, _is_target) as c:
        again = a.to("cpu", non_blocking=True)
    assert again is a and c.deferred == 0 and sim_cc.stats["copies_h2d"] == before


def test_prestaged_inputs_made_after_a_mid_scope_read_ride_its_crossing(sim_cc):
    """SGLang's Triton allocation path: a launch reads the pending inputs mid-builder, and inputs the
    builder makes after it were pre-staged before it, so the scope crosses once, not twice."""
    st = H2DStager(sim_cc)
    before = sim_cc.stats["copies_h2d"]
    with deferred_h2d(st, _is_target) as c:
        assert c.prestage(torch.tensor([0.5, 0.7]))
        a = torch.tensor([1, 2]).to("cpu")
        a.data_ptr()  # the launch: flushes a and the pre-staged snapshot
        late = torch.tensor([0.5, 0.7], dtype=torch.float, device="cpu")  # equal bytes: the pre-staged copy
        assert c.flushes == 1 and c.deferred == 1
    assert sim_cc.stats["copies_h2d"] - before == 1 and late.tolist() == [0.5, 0.699999988079071]


def test_a_prestaged_guess_is_never_stale_and_is_handed_out_once(sim_cc):
    st = H2DStager(sim_cc)
    host = torch.tensor([1, 2, 3])
    with deferred_h2d(st, _is_target) as c:
        c.prestage(host)
        torch.tensor([0]).to("cpu").data_ptr()  # the snapshot [1, 2, 3] crosses here
        host[0] = 9  # changed after it crossed: the later copy must carry the new bytes
        changed = host.to("cpu")
        c.prestage(torch.tensor([4, 4]))
        first, second = torch.tensor([4, 4]).to("cpu"), torch.tensor([4, 4]).to("cpu")
        other_dtype = torch.tensor([1, 2, 3], dtype=torch.int32).to("cpu")
    assert changed.tolist() == [9, 2, 3] and other_dtype.dtype == torch.int32
    assert first.data_ptr() != second.data_ptr() and first.tolist() == second.tolist() == [4, 4]
