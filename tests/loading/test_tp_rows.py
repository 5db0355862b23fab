"""The row tracer alone: which uses give rows, which leave a tensor whole, and that nothing is written."""

from __future__ import annotations

import torch

from cc_runtime.loading.tp_rows import RowTrace


def test_only_a_single_dim0_narrow_copied_once_gives_rows_and_nothing_is_written() -> None:
    trace = RowTrace()
    col = torch.nn.Parameter(torch.zeros(4, 6), requires_grad=False)
    row = torch.nn.Parameter(torch.zeros(8, 3), requires_grad=False)
    full = torch.nn.Parameter(torch.zeros(8, 6), requires_grad=False)
    names = ("narrow", "slice", "dim1", "whole", "twice", "cast", "unused")
    t = {n: trace.tracer(("f", n), (8, 6), torch.bfloat16) for n in names}

    def load() -> None:
        assert t["narrow"].shape == (8, 6) and t["narrow"].size(0) == 8  # metadata is free
        col.data.copy_(t["narrow"].narrow(0, 4, 4))
        col.data[:].copy_(t["slice"][0:4])
        row.data.copy_(t["dim1"].narrow(1, 3, 3))
        full.data.copy_(t["whole"])
        col.data.copy_(t["twice"].narrow(0, 0, 4))
        col.data.copy_(t["twice"].narrow(0, 4, 4))
        col.data.copy_(t["cast"].narrow(0, 4, 4).to(torch.float32))
        full.data.fill_(1)  # a real write: suppressed while tracing
        full[4:].data.zero_()

    trace.run(load)
    assert trace.rows() == {("f", "narrow"): (4, 8), ("f", "slice"): (0, 4)}
    for p in (col, row, full):
        assert not p.data.any()
    assert trace.skipped_writes == 2


def test_reading_values_is_untraceable() -> None:
    import pytest

    from cc_runtime.loading.tp_rows import Untraceable

    trace = RowTrace()
    x = trace.tracer("x", (4,), torch.float32)
    with pytest.raises(Untraceable):
        trace.run(lambda: float(x[0]))
