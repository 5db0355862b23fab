"""Property-based: any sequence of submit / synchronize / failing copy / shutdown loses nothing,
reorders nothing and never hangs (simulated device, CC semantics)."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cc_runtime.readback import ReadbackError, ReadbackShutdownError, ReadbackWorker

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(0, 2**31)),
        st.tuples(st.just("fail"), st.integers(0, 0)),
        st.tuples(st.just("device_error"), st.integers(0, 0)),
        st.tuples(st.just("sync"), st.integers(0, 50)),
        st.tuples(st.just("shutdown"), st.integers(0, 0)),
    ),
    min_size=1,
    max_size=25,
)


@pytest.mark.timeout(180)
@settings(max_examples=int(os.environ.get("CC_RUNTIME_TEST_EXAMPLES", "30")), deadline=None)
@given(ops=OPS, max_pending=st.integers(1, 4))
def test_no_loss_no_reordering_no_hang(ops, max_pending):
    from cc_runtime.emulator import SimDevice

    with SimDevice("h100", name="sim-prop") as sim_cc:  # a fresh device per example: no state leaks
        _check_sequence(sim_cc, ops, max_pending)


def _check_sequence(sim_cc, ops, max_pending):
    worker = ReadbackWorker(sim_cc, max_pending=max_pending, shutdown_timeout_s=20)
    expected: list[tuple[object, str]] = []  # (done, "value:<n>" | "error")
    ran_on_worker: list[int] = []
    try:
        for op, arg in ops:
            if op == "submit":
                src = sim_cc.zeros((3,), dtype=torch.int64)
                sim_cc.launch(lambda s=src, v=arg: s.fill_(v), 0.0)
                seq = len(expected)

                def copy(s=src, seq=seq):
                    ran_on_worker.append(seq)
                    return sim_cc.to_host(s)

                expected.append((worker.submit(copy), f"value:{arg}"))
            elif op == "fail":
                seq = len(expected)

                def broken(seq=seq):
                    ran_on_worker.append(seq)
                    raise OSError("copy engine fault")

                expected.append((worker.submit(broken), "error"))
            elif op == "device_error":
                # Device work fails before the readback: the copy fails, in its turn, with the cause.
                # Like CUDA's sticky error, the simulated stream skips later work until the error is
                # reported, so the consumer synchronises right away (as a scheduler would crash here).
                sim_cc.launch(lambda: (_ for _ in ()).throw(RuntimeError("Xid 79")), 0.0)
                seq = len(expected)
                done = worker.submit(lambda seq=seq: ran_on_worker.append(seq))
                expected.append((done, "error"))
                with pytest.raises(ReadbackError, match="Xid 79"):
                    done.synchronize(timeout=30)
            elif op == "sync" and expected:
                done, _ = expected[arg % len(expected)]
                try:
                    done.synchronize(timeout=30)
                except ReadbackError:
                    pass
            elif op == "shutdown":
                assert worker.shutdown(timeout=30) is True
    finally:
        assert worker.shutdown(timeout=30) is True

    for done, want in expected:
        assert done.query(), "every readback completes or fails by shutdown"
        if want == "error":
            with pytest.raises(ReadbackError) as info:
                done.synchronize(timeout=5)
            assert not isinstance(info.value, ReadbackShutdownError)
            assert info.value.__cause__ is not None
        else:
            value = int(want.split(":")[1])
            assert done.result.tolist() == [value] * 3
    # The worker ran its share strictly in submission order (inline ones after shutdown run at once).
    assert ran_on_worker == sorted(ran_on_worker)
    # A device error is sticky until synchronised; clear it so the next example starts clean.
    try:
        sim_cc.synchronize(timeout=30)
    except Exception:  # noqa: BLE001
        pass
