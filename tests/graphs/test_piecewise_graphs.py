"""Piecewise graph runner on the CPU stand-in path: splitting, buckets, padding, buffers, addresses.

The CPU path is the CUDA path minus ``torch.cuda.graph``: a "replay" runs the piece on its captured
(static) inputs and copies the results into the captured output buffers, so every address and copy
rule is exercised here. Equality is bitwise against eager at the padded size (the same ops on the
same inputs) and within a stated tolerance against eager at the real size (a GEMM with a different row
count may block its reduction differently: differences of a few float32 ulps).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cc_runtime.graphs import (
    Buckets,
    GraphAddressError,
    LaunchCounter,
    PiecewiseCudaGraphRunner,
    SplitOpRegistry,
    default_capture_sizes,
    default_registry,
    split,
)
from cc_runtime.models import (
    AttentionBatch,
    KVCache,
    TinyLlamaConfig,
    build_tiny_llama,
    dummy_batch,
    example_inputs,
    make_batch,
)

CFG = TinyLlamaConfig(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=96,
                      vocab_size=128, max_positions=512)
SIZES = [1, 2, 4, 8, 16, 24, 32, 48, 64]
ATOL = RTOL = 1e-5  # float32, vs eager at the unpadded size


@pytest.fixture(scope="module")
def model():
    return build_tiny_llama(CFG, seed=1)


@pytest.fixture(scope="module")
def runner(model):
    r = PiecewiseCudaGraphRunner(model, example_inputs(4, CFG), capture_sizes=SIZES,
                                 batch_context=dummy_batch, debug=True)
    r.capture()
    return r


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([x, x.new_zeros(n - x.shape[0])])


def _eager_padded(model, batch: AttentionBatch, ids, pos, bucket: int) -> torch.Tensor:
    with torch.no_grad(), batch.active():
        return model(_pad(ids, bucket), _pad(pos, bucket))[: ids.shape[0]]


# -- buckets --------------------------------------------------------------------------------------
def test_default_sizes_follow_vllm():
    sizes = default_capture_sizes(512)
    assert sizes[:4] == [1, 2, 4, 8]
    assert sizes[3:34] == list(range(8, 256, 8))
    assert sizes[34:] == list(range(256, 513, 16))
    assert default_capture_sizes(100)[-1] == 100  # the maximum itself is always captured
    assert default_capture_sizes(3) == [1, 2, 3]
    with pytest.raises(ValueError):
        default_capture_sizes(0)


def test_bucket_lookup_pads_up_and_goes_eager_above_max():
    b = Buckets([16, 1, 8, 4, 4])
    assert b.sizes == [1, 4, 8, 16]
    assert [b.bucket_for(n) for n in (1, 2, 4, 5, 9, 16)] == [1, 4, 4, 8, 16, 16]
    assert b.bucket_for(17) is None and b.bucket_for(0) is None
    assert b.capture_order() == [16, 8, 4, 1]
    with pytest.raises(ValueError):
        Buckets([0, 4])


# -- splitting ------------------------------------------------------------------------------------
def test_split_at_attention_keeps_order(model):
    result = split(model, default_registry())
    assert len(result.split_names) == CFG.num_layers
    assert len(result.piece_names) == CFG.num_layers + 1
    # pieces and split ops alternate, starting and ending with a piece
    kinds = ["split" if n in result.split_names else "piece" for n in result.order]
    assert kinds == ["piece", "split"] * CFG.num_layers + ["piece"]
    ids, pos = example_inputs(7, CFG)
    with torch.no_grad():
        assert torch.equal(result.module(ids, pos), model(ids, pos))


def my_op(x):
    return x * 2


def test_registry_accepts_functions_ops_names_and_methods():
    reg = SplitOpRegistry()

    class M(torch.nn.Module):
        def forward(self, x):
            a = torch.relu(x)
            b = my_op(a)
            c = torch.sigmoid(b)
            s = c.sum().item()
            return c + s

    assert len(split(M(), reg).split_names) == 0
    reg.register(my_op)
    assert my_op in reg and len(split(M(), reg).split_names) == 1
    reg.register_method("item")
    assert len(split(M(), reg).split_names) == 2
    reg.register(torch.ops.aten.sigmoid.default)  # a torch op matches by qualified name, too
    assert "aten::sigmoid" in reg
    reg.unregister(my_op)
    assert my_op not in reg and len(split(M(), reg).split_names) == 1
    x = torch.randn(5, 3)
    assert torch.equal(split(M(), reg).module(x), M()(x))


# -- correctness ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 8, 13, 37, 64])
def test_prefill_equals_eager(model, runner, n):
    ids, pos = example_inputs(n, CFG, seed=n)
    batch = AttentionBatch([n])
    with torch.no_grad(), batch.active():
        got = runner(ids, pos)
        eager = model(ids, pos)
    assert got.shape == (n, CFG.vocab_size)
    assert torch.equal(got, _eager_padded(model, batch, ids, pos, runner.bucket_for(n)))
    torch.testing.assert_close(got, eager, atol=ATOL, rtol=RTOL)


def test_above_max_runs_eager(model, runner):
    ids, pos = example_inputs(80, CFG, seed=5)
    before = runner.stats.eager_forwards
    with torch.no_grad(), AttentionBatch([80]).active():
        got = runner(ids, pos)
        eager = model(ids, pos)
    assert runner.stats.eager_forwards == before + 1
    assert torch.equal(got, eager)


def _prefill(model_or_runner, cache, seq_ids, lens, seed):
    batch, ids, pos = make_batch(lens, CFG, seed=seed, cache=cache, seq_ids=seq_ids)
    with torch.no_grad(), batch.active():
        return model_or_runner(ids, pos), ids


def test_mixed_prefill_and_decode_batch(model, runner):
    caches = {"eager": KVCache(CFG.num_layers), "graph": KVCache(CFG.num_layers)}
    for name, fn in (("eager", model), ("graph", runner)):
        _prefill(fn, caches[name], ["a", "b"], [11, 5], seed=1)
    # one flat batch: decode a, prefill c (20 new tokens), decode b -> 22 tokens, padded to 24
    lens, seq_ids = [1, 20, 1], ["a", "c", "b"]
    batch_e, ids, pos = make_batch(lens, CFG, seed=2, cache=caches["eager"], seq_ids=seq_ids)
    batch_g, ids_g, pos_g = make_batch(lens, CFG, seed=2, cache=caches["graph"], seq_ids=seq_ids)
    assert torch.equal(pos, pos_g) and pos.tolist()[:2] == [11, 0]
    with torch.no_grad(), batch_g.active():
        got = runner(ids_g, pos_g)
    eager = _eager_padded(model, batch_e, ids, pos, runner.bucket_for(22))
    assert torch.equal(got, eager)
    for layer in range(CFG.num_layers):
        for sid in seq_ids:
            assert torch.equal(caches["eager"].keys[layer][sid], caches["graph"].keys[layer][sid])
    assert caches["graph"].length("a") == 12 and caches["graph"].length("c") == 20


def test_decode_matches_full_prefill(model):
    """The model itself: a decode step over the cache equals the last row of one long prefill."""
    cache = KVCache(CFG.num_layers)
    _, first = _prefill(model, cache, ["s"], [9], seed=3)
    batch, nxt, pos = make_batch([1], CFG, seed=4, cache=cache, seq_ids=["s"])
    with torch.no_grad(), batch.active():
        step = model(nxt, pos)
    ids = torch.cat([first, nxt])
    with torch.no_grad(), AttentionBatch([10]).active():
        full = model(ids, torch.arange(10))
    torch.testing.assert_close(step[0], full[-1], atol=ATOL, rtol=RTOL)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=4))
@example([20, 20, 20, 20])  # 80 tokens: above the largest captured size (64), so the eager branch runs
@example([7, 1])
def test_random_batches_equal_padded_eager(model, runner, lens):
    """Up to the largest captured size: bitwise equal to eager at the padded size, served from the
    graphs; above it: the model's own eager forward at the real size, counted as an eager forward."""
    batch, ids, pos = make_batch(lens, CFG, seed=sum(lens))
    graph0, eager0 = runner.stats.graph_forwards, runner.stats.eager_forwards
    with torch.no_grad(), batch.active():
        got = runner(ids, pos)
    if sum(lens) > runner.buckets.max:
        assert runner.bucket_for(sum(lens)) is None
        with torch.no_grad(), batch.active():
            assert torch.equal(got, model(ids, pos))
        assert (runner.stats.graph_forwards, runner.stats.eager_forwards) == (graph0, eager0 + 1)
        return
    assert torch.equal(got, _eager_padded(model, batch, ids, pos, runner.bucket_for(sum(lens))))
    assert (runner.stats.graph_forwards, runner.stats.eager_forwards) == (graph0 + 1, eager0)


# -- buffers, padding, addresses ------------------------------------------------------------------
def test_capture_is_largest_first(model):
    seen: list[int] = []

    def ctx(n):
        seen.append(n)
        return dummy_batch(n)

    PiecewiseCudaGraphRunner(model, example_inputs(2, CFG), capture_sizes=[4, 16, 8],
                             batch_context=ctx).capture()
    assert seen == [16, 8, 4]


def test_padding_rows_are_reset_between_batches(model, runner):
    for n in (7, 5):
        ids, pos = example_inputs(n, CFG, seed=10 + n)
        with torch.no_grad(), AttentionBatch([n]).active():
            runner(ids, pos)
    static_ids = runner._static_inputs[0]
    assert torch.equal(static_ids[5:8], torch.zeros(3, dtype=static_ids.dtype))


def test_replay_reuses_output_memory_and_copies_only_split_outputs(model, runner):
    stats = runner.stats
    outs = []
    for seed in (1, 2):
        ids, pos = example_inputs(6, CFG, seed=seed)
        copies, replays = stats.input_copies, stats.replays
        with torch.no_grad(), AttentionBatch([6]).active():
            outs.append(runner(ids, pos))
        # attention writes into a buffer allocated inside the previous graph: nothing to copy
        assert stats.input_copies - copies == 0
        assert stats.replays - replays == runner.num_pieces
    assert outs[0].data_ptr() == outs[1].data_ptr()  # graph output semantics: same memory each replay


def fresh_split(x):
    """A split op that returns a new (eager) tensor, as most ops do: its output must be copied."""
    return torch.tanh(x) * 2


class FreshSplitModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 8)
        self.b = torch.nn.Linear(8, 8)

    def forward(self, x):
        h = self.a(x)
        y = fresh_split(h)
        return self.b(y) + h


def test_split_outputs_are_copied_into_one_buffer_shared_across_sizes():
    reg = default_registry().copy()
    reg.register(fresh_split)
    torch.manual_seed(0)
    m = FreshSplitModel().eval()
    sizes = [2, 4, 8]
    r = PiecewiseCudaGraphRunner(m, (torch.randn(3, 8),), capture_sizes=sizes, split_ops=reg, debug=True)
    for n in (1, 3, 8):
        x = torch.randn(n, 8)
        copies = r.stats.input_copies
        with torch.no_grad():
            got = r(x)
            padded = m(torch.cat([x, x.new_zeros(r.bucket_for(n) - n, 8)]))[:n]
        assert torch.equal(got, padded)
        assert r.stats.input_copies - copies == 1  # fresh_split's output, into the runner's buffer
    second = r.split.piece_names[1]
    ptrs = set()
    for size in sizes:
        entry = r._entries[(second, size)]
        ptrs |= {a.data_ptr() for a, c in zip(entry.args, entry.copied, strict=True) if c is True}
    assert len(ptrs) == 1  # every size uses a prefix of one max-size buffer


def test_debug_mode_catches_moved_inputs_and_normal_mode_copies(model):
    for debug in (True, False):
        r = PiecewiseCudaGraphRunner(model, example_inputs(4, CFG), capture_sizes=[8],
                                     batch_context=dummy_batch, debug=debug)
        r.capture()
        first = r.split.piece_names[0]
        entry = r._entries[(first, 8)]
        entry.output = tuple(t.clone() for t in entry.output)  # the next piece's inputs move
        ids, pos = example_inputs(8, CFG, seed=3)
        with torch.no_grad(), AttentionBatch([8]).active():
            if debug:
                with pytest.raises(GraphAddressError, match="captured at"):
                    r(ids, pos)
            else:
                assert torch.equal(r(ids, pos), model(ids, pos))


def test_bad_inputs_fall_back_to_eager(model, runner):
    ids, pos = example_inputs(5, CFG)
    before = runner.stats.eager_forwards
    with torch.no_grad(), AttentionBatch([5]).active():
        out = runner(ids, pos.to(torch.int32))  # wrong dtype: the model still runs
        assert torch.equal(out, model(ids, pos.to(torch.int32)))
    assert runner.stats.eager_forwards == before + 1


def test_piecewise_launches_far_fewer_kernels(model, runner):
    ids, pos = example_inputs(16, CFG, seed=7)
    with torch.no_grad(), AttentionBatch([16]).active():
        with LaunchCounter() as eager:
            model(ids, pos)
        with LaunchCounter() as graphed:
            runner(ids, pos)
    assert graphed.count < eager.count / 2
    assert "mm" in eager.by_op and "mm" not in graphed.by_op  # GEMMs are inside the graphs


def test_first_call_captures_lazily(model):
    r = PiecewiseCudaGraphRunner(model, example_inputs(2, CFG), capture_sizes=[4, 8], batch_context=dummy_batch)
    assert not r.captured
    ids, pos = example_inputs(3, CFG, seed=9)
    with torch.no_grad(), AttentionBatch([3]).active():
        out = r(ids, pos)
        assert torch.equal(out, _eager_padded(model, AttentionBatch([3]), ids, pos, 4))
    assert r.captured and set(k[1] for k in r._entries) == {4, 8}


class DataDependent(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # control flow on values: torch.fx cannot trace it
            return x * 2
        return x


def test_untraceable_model_gets_a_clear_error():
    from cc_runtime.graphs import TraceError

    with pytest.raises(TraceError, match="register_split_op"):
        PiecewiseCudaGraphRunner(DataDependent(), (torch.randn(2, 3),))


def test_weak_ref_aliases_without_copying():
    from cc_runtime.graphs.weakref import weak_ref_tensor

    t = torch.arange(12.0).view(3, 4)[1:]
    w = weak_ref_tensor(t)
    assert w.data_ptr() == t.data_ptr() and w.stride() == t.stride() and torch.equal(w, t)
    t.add_(1)  # same memory: the alias sees writes
    assert torch.equal(w, t)
