"""The SGLang staging patch's builder wrapper, without SGLang: it never breaks a builder."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from cc_runtime.patches import sglang_staging  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_state():
    sglang_staging.STATE.reset()
    yield
    sglang_staging.STATE.reset()


def _builder(batch):
    batch.seq_lens = torch.tensor(batch.lens, dtype=torch.int64).to(batch.device, non_blocking=True)
    batch.req_pool_indices = torch.tensor(batch.pool, device=batch.device)
    return batch.seq_lens + 0  # a read inside the builder


def test_without_a_usable_device_the_builder_runs_as_written():
    batch = SimpleNamespace(device="cuda", lens=[3, 4], pool=[1, 2])
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the device is usable")
    with pytest.raises((RuntimeError, AssertionError, AttributeError, TypeError)):
        sglang_staging._in_scope(_builder, batch, (batch,), {})  # upstream's own error, unchanged
    assert sglang_staging.stager_for("cuda") is None


def test_bound_device_builder_crosses_once_with_identical_values(sim_cc):
    sglang_staging.bind("cpu", sim_cc)
    batch = SimpleNamespace(device="cpu", lens=[3, 4], pool=[1, 2])
    before = sim_cc.stats["copies_h2d"]
    out = sglang_staging._in_scope(_builder, None, (batch,), {})
    assert sim_cc.stats["copies_h2d"] - before == 1
    assert batch.seq_lens.tolist() == [3, 4] and batch.req_pool_indices.tolist() == [1, 2]
    assert out.tolist() == [3, 4] and sim_cc.is_device(batch.seq_lens)


def test_classmethod_builders_take_the_device_from_their_arguments(sim_cc):
    sglang_staging.bind("cpu", sim_cc)

    class Info:
        device = "cuda"  # a dataclass default on the class, not this batch's device

    batch = SimpleNamespace(device="cpu", lens=[5], pool=[6])
    assert sglang_staging._device_of(Info, (batch,), {}) == "cpu"


def test_a_failing_device_lookup_is_logged_once_per_site_not_once_per_step(monkeypatch, caplog):
    def broken(*_a, **_k):
        raise RuntimeError("device lookup failed")

    monkeypatch.setattr(sglang_staging, "_device_of", broken)
    monkeypatch.setattr(sglang_staging, "_warned_sites", set(), raising=False)

    def other_builder(batch):
        return batch

    batch = SimpleNamespace(device="cpu", lens=[1], pool=[0])
    with caplog.at_level("WARNING", logger="cc_runtime.patches.sglang_staging"):
        for _ in range(5):  # five steps
            sglang_staging._in_scope(_builder, None, (batch,), {})
            sglang_staging._in_scope(other_builder, None, (batch,), {})
    warnings = [r.getMessage() for r in caplog.records if "staging skipped" in r.getMessage()]
    assert len(warnings) == 2 and "_builder" in warnings[0] and "other_builder" in warnings[1]
