"""No reader ever gets bytes other than the ones the code asked for (simulated device, poison on).

With ``CC_RUNTIME_STAGING_VERIFY=1`` every placeholder is filled with a poison pattern when it is made,
so a read that comes before its flush shows up as wrong values instead of as last step's plausible ones.
Readers that never call back into Python (a launcher reading pointers in C, a DLPack consumer) are
stood in for by reads under ``torch._C.DisableTorchFunction()``: nothing cc_runtime hooks can see them.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading

import pytest

torch = pytest.importorskip("torch")

from cc_runtime.staging import H2DStager  # noqa: E402
from cc_runtime.staging.deferred import deferred_h2d  # noqa: E402


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setenv("CC_RUNTIME_STAGING_VERIFY", "1")


def _is_target(dev) -> bool:
    return str(dev) == "cpu"


def _raw(t):
    """What a C reader sees: the memory as it is now, no hook involved."""
    with torch._C.DisableTorchFunction():
        return t.clone().tolist()


# -- 1. the host bytes are captured when the copy is made ------------------------------------------
@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_host_changes_after_the_copy_never_reach_the_device(sim_cc, order):
    st = H2DStager(sim_cc)
    hosts = [torch.tensor([1, 2, 3]), torch.tensor([0.5, 1.5]), torch.tensor([7, 8], dtype=torch.int32)]
    want = [h.tolist() for h in hosts]
    made = [None, None, None]
    with deferred_h2d(st, _is_target):
        for i in order:
            made[i] = hosts[i].to("cpu", non_blocking=True) if i != 1 else torch.tensor(hosts[i], device="cpu")
            hosts[i].fill_(-9)  # upstream may reuse its host tensor as soon as .to() returned
        again = hosts[order[0]].to("cpu")  # a second copy of the same host tensor carries its new bytes
    assert [m.tolist() for m in made] == want
    assert again.tolist() == [-9] * len(want[order[0]])


def test_a_reused_host_buffer_gives_each_copy_its_own_bytes(sim_cc):
    st = H2DStager(sim_cc)
    buf = torch.zeros(4, dtype=torch.int64)
    outs = []
    with deferred_h2d(st, _is_target):
        for k in range(5):
            buf.fill_(k)
            outs.append(buf.to("cpu"))
            if k == 2:
                outs[0].data_ptr()  # a mid-scope flush between the copies
    assert [o.tolist() for o in outs] == [[k] * 4 for k in range(5)]


# -- 3. every way to reach the device memory flushes first ------------------------------------------
@dataclasses.dataclass
class _Cfg:
    ids: object
    extra: dict


class _Holder:
    def __init__(self, t) -> None:
        self.inner = {"deep": [(t,)]}


def _c_op(cfg):
    """A custom op that takes a structure: its body reads memory without any hook (as C would)."""
    from torch.overrides import handle_torch_function, has_torch_function

    if has_torch_function((cfg,)) or torch._C._is_torch_function_mode_enabled():
        return handle_torch_function(_c_op, (cfg,), cfg)
    if isinstance(cfg, dict):
        return _raw(cfg["x"])
    if isinstance(cfg, _Cfg):
        return _raw(cfg.extra["k"][0])
    return _raw(cfg.inner["deep"][0][0])


@pytest.mark.parametrize("wrap", ["dict", "dataclass", "object"])
def test_an_op_gets_filled_bytes_of_a_placeholder_nested_in_its_arguments(sim_cc, wrap):
    st = H2DStager(sim_cc)
    with deferred_h2d(st, _is_target):
        p = torch.tensor([4, 5, 6]).to("cpu")
        arg = {"dict": {"x": p}, "dataclass": _Cfg(ids=1, extra={"k": [p]}), "object": _Holder(p)}[wrap]
        seen = _c_op(arg)
    assert seen == [4, 5, 6]


def test_a_placeholder_as_the_data_of_torch_tensor_is_read_filled(sim_cc):
    st = H2DStager(sim_cc)
    with deferred_h2d(st, _is_target):
        p = torch.tensor([3, 1, 2]).to("cpu")
        q = torch.tensor(p, device="cpu")
        r = torch.tensor([p[0].item() if False else 0], device="cpu")  # noqa: SIM210 - a plain one beside it
    assert q.tolist() == [3, 1, 2] and r.tolist() == [0]


@pytest.mark.parametrize("reader", ["data_ptr", "__dlpack__", "to_dlpack"])
def test_pointer_and_dlpack_readers_get_filled_bytes(sim_cc, reader):
    st = H2DStager(sim_cc)
    with deferred_h2d(st, _is_target):
        p = torch.tensor([11, 12, 13]).to("cpu")
        if reader == "data_ptr":
            p.data_ptr()
            seen = _raw(p)
        elif reader == "__dlpack__":
            seen = _raw(torch.from_dlpack(p.__dlpack__()))
        else:
            seen = _raw(torch.utils.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(p)))
    assert seen == [11, 12, 13]


def test_a_reader_on_another_thread_gets_filled_bytes(sim_cc):
    st = H2DStager(sim_cc)
    seen = []
    with deferred_h2d(st, _is_target):
        p = torch.tensor([21, 22]).to("cpu").view(2, 1)
        t = threading.Thread(target=lambda: seen.append((p + 0).view(-1).tolist()))
        t.start()
        t.join(30)
    assert seen == [[21, 22]]


@pytest.mark.parametrize("sync", ["device", "stream", "event"])
def test_synchronisation_flushes_so_a_later_c_reader_sees_filled_bytes(sim_cc, sync):
    st = H2DStager(sim_cc)
    with deferred_h2d(st, _is_target):
        p = torch.tensor([31, 32]).to("cpu")
        if sync == "device":
            sim_cc.synchronize()
        elif sync == "stream":
            sim_cc.current_stream().synchronize()
        else:
            ev = sim_cc.Event()
            ev.record()
            ev.synchronize()
        seen = _raw(p)
    assert seen == [31, 32]


def test_graph_capture_start_flushes_pending_copies(sim_cc):
    st = H2DStager(sim_cc)
    with deferred_h2d(st, _is_target):
        p = torch.tensor([41, 42]).to("cpu")
        with sim_cc.capture(sim_cc.Graph()):
            seen = _raw(p)  # a captured kernel's read: no copy may be made here any more
    assert seen == [41, 42]


def test_poison_shows_an_unflushed_read(sim_cc):
    """The verification mode itself: a placeholder's memory is the poison pattern until its flush."""
    from cc_runtime.staging.readers import POISON_BYTE

    st = H2DStager(sim_cc)
    with deferred_h2d(st, _is_target) as c:
        p = torch.tensor([1, 2], dtype=torch.uint8).to("cpu")
        with torch._C.DisableTorchFunction():
            early = p.clone().tolist()  # deliberately bypasses every hook
        assert c.flushes == 0
    assert early == [POISON_BYTE] * 2 and p.tolist() == [1, 2]
