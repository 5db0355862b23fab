"""The ``sglang.loading`` patch against the REAL SGLang weight iterators (0.5.12 or 0.5.23, per nox session).

Real: SGLang's ``weight_utils`` iterators (``safetensors_weights_iterator``, the multi-thread (0.5.12)
and buffered variants), ``DefaultModelLoader`` / ``LayeredModelLoader`` instances and SGLang's own
``default_weight_loader``; cc_runtime's patch manager applies and reverts the patch.
Stand-ins: the "device" is the emulator's simulated device (no CUDA here), given to the patch through
``DEVICE_FOR_TESTS``. SGLang's real ``LlamaForCausalLM`` (tiny config) is built on CPU, at world size 1
and as both ranks of tensor-parallel size 2 in one process (the TP group is a rank/size stand-in: loading
never communicates).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import cc_runtime  # noqa: E402
from cc_runtime import runtime  # noqa: E402
from cc_runtime.emulator import SimDevice  # noqa: E402

pytestmark = [pytest.mark.upstream, pytest.mark.timeout(300)]

from loading.checkpoints import make_checkpoint, same_bytes  # noqa: E402


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch):
    from cc_runtime.patches import sglang_loading as sl
    from cc_runtime.patching import device as device_check

    dev = SimDevice("h100", name="sim-load")
    monkeypatch.setattr(sl, "DEVICE_FOR_TESTS", dev)
    # The simulated device plays the GPU here, whatever SGLang server args an earlier test published
    # (a CPU model build publishes device cpu, which would make the patch not applicable).
    monkeypatch.setattr(device_check, "serving_device",
                        lambda argv=None: ("cuda", "test stand-in: the simulated device plays the GPU"))
    yield dev
    dev.shutdown(timeout=5)


@pytest.fixture
def patched(sglang_version: str, sim: Any) -> Any:
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1", patches="sglang.loading")
    from sglang.srt.model_loader import loader as loader_mod  # noqa: F401 - triggers the patch
    from sglang.srt.model_loader import weight_utils as wu

    rec = runtime.manager().records["sglang.loading"]
    assert rec.status == "applied", rec.reason
    yield wu
    runtime._reset_for_tests()


def _files(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".safetensors"))


def _iterators(wu: Any) -> dict[str, Any]:
    its = {"plain": lambda files: wu.safetensors_weights_iterator(files)}
    if hasattr(wu, "multi_thread_safetensors_weights_iterator"):
        its["multi_thread"] = lambda files: wu.multi_thread_safetensors_weights_iterator(files, max_workers=2)
    if hasattr(wu, "buffered_multi_thread_safetensors_weights_iterator"):
        its["buffered"] = lambda files: wu.buffered_multi_thread_safetensors_weights_iterator(files, max_workers=2)
    return its


def _as_default_loader(fn: Any) -> Any:
    """Run ``fn`` as DefaultModelLoader._get_weights_iterator runs its iterators (the patch's marker)."""
    from sglang.srt.configs.load_config import LoadConfig
    from sglang.srt.model_loader.loader import DefaultModelLoader

    from cc_runtime.patches import sglang_loading as sl

    sl._local.loader = object.__new__(DefaultModelLoader)
    sl._local.loader.load_config = LoadConfig()
    try:
        return fn()
    finally:
        sl._local.loader = None


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_patched_iterators_yield_device_tensors_byte_identical_to_upstream(tmp_path, patched: Any, sim: Any,
                                                                          kind: str) -> None:
    from sglang.srt.model_loader.weight_utils import default_weight_loader

    wu = patched
    want = make_checkpoint(str(tmp_path), kind, files=3)
    files = _files(str(tmp_path))
    upstream = {n: t.clone() for n, t in wu.safetensors_weights_iterator.__wrapped__(files)}
    for label, make in _iterators(wu).items():
        params = {n: torch.nn.Parameter(sim.mark_device(torch.full_like(t, 0)), requires_grad=False)
                  for n, t in want.items()}
        for p in params.values():
            p.data.view(torch.uint8).fill_(0xA5)
        before = sim.stats["copies_h2d"]
        it = _as_default_loader(lambda make=make: make(files))
        n = 0
        for name, w in it:
            assert sim.is_device(w), (label, name)
            default_weight_loader(params[name], w)  # SGLang's own weight_loader: param.data.copy_(w)
            n += 1
        assert n == len(want)
        crossings = sim.stats["copies_h2d"] - before
        assert 0 < crossings <= 3 + 3  # 128 MiB chunks: one per file
        for name in want:
            assert same_bytes(params[name].data, upstream[name]), (label, name)
            assert same_bytes(params[name].data, want[name]), (label, name)


def test_other_callers_get_upstream_with_the_reason(tmp_path, patched: Any, sim: Any) -> None:
    from sglang.srt.configs.load_config import LoadConfig
    from sglang.srt.model_loader.loader import LayeredModelLoader

    from cc_runtime.patches import sglang_loading as sl

    wu = patched
    make_checkpoint(str(tmp_path), "dense", files=2)
    files = _files(str(tmp_path))
    # BitsAndBytes, GGUF, remote loaders and direct callers: not inside DefaultModelLoader._get_weights_iterator
    for _name, w in wu.safetensors_weights_iterator(files):
        assert not sim.is_device(w)
    assert sl.LAST[-1][0] == "upstream" and "not called from DefaultModelLoader" in sl.LAST[-1][1]
    layered = object.__new__(LayeredModelLoader)
    layered.load_config = LoadConfig()
    sl._local.loader = layered
    try:
        for _name, w in wu.safetensors_weights_iterator(files):
            assert not sim.is_device(w)
    finally:
        sl._local.loader = None
    assert "LayeredModelLoader is not the default loader" in sl.LAST[-1][1]


def test_non_cuda_device_is_not_applicable(monkeypatch: pytest.MonkeyPatch, sglang_version: str) -> None:
    from cc_runtime.patches import sglang_loading as sl

    monkeypatch.setattr(sl, "DEVICE_FOR_TESTS", None)
    assert not sl.sglang_device_is_cuda()  # CPU-only torch here
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1", patches="sglang.loading")
    rec = runtime.manager().records["sglang.loading"]
    assert rec.status == "not applicable", (rec.status, rec.reason)


def test_revert_restores_upstream(tmp_path, patched: Any) -> None:
    from sglang.srt.model_loader import loader as loader_mod

    wu = patched
    original = wu.safetensors_weights_iterator.__wrapped__
    assert loader_mod.safetensors_weights_iterator is wu.safetensors_weights_iterator
    cc_runtime.deactivate()
    assert wu.safetensors_weights_iterator is original
    assert loader_mod.safetensors_weights_iterator is original


# -- a real SGLang model class: LlamaForCausalLM with the shipped tiny config, world size 1 ---------------
TINY_LLAMA = os.path.join(os.path.dirname(cc_runtime.__file__), "sweep", "models", "tiny-llama")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_factory() -> Any:
    """Builds SGLang's real ``LlamaForCausalLM`` on CPU (bf16 parameters, TP world size 1).

    Stand-in: ``vllm._custom_ops`` (SGLang's rotary layer imports its CUDA rotary kernel from there on
    a platform it does not recognise; the kernel is never called by ``load_weights``)."""
    import sys
    import types

    if os.environ.get("CC_RUNTIME_TEST_SGLANG") is None:
        pytest.skip("not in an upstream-* nox session")
    added = [m for m in ("vllm", "vllm._custom_ops") if m not in sys.modules]
    if "vllm._custom_ops" not in sys.modules:
        vllm, ops = types.ModuleType("vllm"), types.ModuleType("vllm._custom_ops")
        ops.rotary_embedding = None  # type: ignore[attr-defined]
        vllm._custom_ops = ops  # type: ignore[attr-defined]
        sys.modules.setdefault("vllm", vllm)
        sys.modules["vllm._custom_ops"] = ops
    from sglang.srt.server_args import ServerArgs
    from transformers import LlamaConfig

    args = ServerArgs(model_path=TINY_LLAMA, device="cpu", tp_size=1)
    try:
        from sglang.srt.runtime_context import SpawnRanks, publish  # 0.5.2x: process-wide config

        publish(args, role="scheduler", ranks=SpawnRanks(world_rank=0, dp_rank=None, gpu_id=0))
    except ImportError:
        pass
    try:
        from sglang.srt.server_args import set_global_server_args_for_scheduler

        set_global_server_args_for_scheduler(args)
    except ImportError:
        pass
    from sglang.srt.distributed import init_distributed_environment, initialize_model_parallel
    from sglang.srt.distributed import parallel_state as ps

    ours = not ps.model_parallel_is_initialized()
    if ours:
        init_distributed_environment(backend="gloo", world_size=1, rank=0, local_rank=0,
                                     distributed_init_method=f"tcp://127.0.0.1:{_free_port()}")
        try:
            initialize_model_parallel()
        except TypeError:  # 0.5.12 takes the TP size
            initialize_model_parallel(1)
    from sglang.srt.models.llama import LlamaForCausalLM

    config = LlamaConfig.from_pretrained(TINY_LLAMA)

    def build() -> Any:
        before = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = LlamaForCausalLM(config, quant_config=None)
        finally:
            torch.set_default_dtype(before)
        for p in model.parameters():
            p.data.view(torch.uint8).fill_(0xA5)  # poison: a parameter left unwritten cannot pass
        return model

    yield config, build
    if ours:  # leave the process as found for the tests after this module
        ps.destroy_model_parallel()
        ps.destroy_distributed_environment()
    for m in added:
        sys.modules.pop(m, None)


def _llama_checkpoint(folder: str, config: Any, files: int = 2) -> None:
    from cc_runtime.loading.writer import write_index, write_safetensors

    h, hd = config.hidden_size, config.head_dim
    q, kv, inter, vocab = config.num_attention_heads * hd, config.num_key_value_heads * hd, \
        config.intermediate_size, config.vocab_size
    shapes = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,), "lm_head.weight": (vocab, h)}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                       p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
                       p + "mlp.down_proj.weight": (h, inter), p + "input_layernorm.weight": (h,),
                       p + "post_attention_layernorm.weight": (h,)})
    g = torch.Generator().manual_seed(1)
    names = list(shapes)
    per = -(-len(names) // files)
    weight_map, total = {}, 0
    for f in range(files):
        fname = f"model-{f + 1:05d}-of-{files:05d}.safetensors"
        part = {n: torch.randn(shapes[n], generator=g).bfloat16() for n in names[f * per:(f + 1) * per]}
        total += write_safetensors(os.path.join(folder, fname), part)
        weight_map.update({n: fname for n in part})
    write_index(folder, weight_map, total)


def test_real_llama_load_weights_byte_identical_to_upstream(tmp_path, patched: Any, sim: Any,
                                                            llama_factory: Any) -> None:
    """SGLang's real LlamaForCausalLM.load_weights (stacked qkv / gate_up shards, its weight_loaders)
    fed by the patched iterator: every parameter byte-identical to the same model loaded by upstream's."""
    from sglang.srt.model_loader.loader import DefaultModelLoader

    wu = patched
    config, build = llama_factory
    _llama_checkpoint(str(tmp_path), config)
    files = _files(str(tmp_path))
    reference = build()
    reference.load_weights(wu.safetensors_weights_iterator.__wrapped__(files))
    model = build()
    before = sim.stats["copies_h2d"]
    weights = _as_default_loader(lambda: wu.safetensors_weights_iterator(files))
    DefaultModelLoader.load_weights_and_postprocess(model, weights, torch.device("cpu"))
    from cc_runtime.patches import sglang_loading as sl

    assert sl.LAST[-1][0] == "cc_runtime", sl.LAST[-1]
    assert 0 < sim.stats["copies_h2d"] - before <= len(files)  # one chunk per file at 128 MiB
    ref = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        assert same_bytes(p.data, ref[name].data), name
        assert not torch.equal(p.data.view(torch.uint8), torch.full_like(p.data.view(torch.uint8), 0xA5)), name


# -- tensor parallelism: world size 2, both ranks, in one process ------------------------------------------
def _tp_group(rank: int) -> Any:
    """A TP group as the layers read it: rank and size (its communicators are never used by loading)."""
    import types

    return types.SimpleNamespace(rank_in_group=rank, world_size=2, cpu_group=None, device_group=None)


@pytest.fixture
def tp_rank(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``with tp_rank(r):`` builds and loads as rank ``r`` of 2. 0.5.2x: the runtime context's scoped
    override (the layers build their shards from it); 0.5.12: SGLang's TP getters, where the layers
    and models imported them."""
    import contextlib
    import sys

    @contextlib.contextmanager
    def scope(rank: int) -> Any:
        try:
            from sglang.srt.runtime_context import get_parallel
        except ImportError:
            get_parallel = None
        if get_parallel is not None:
            g = _tp_group(rank)
            with get_parallel().override(tp_size=2, tp_rank=rank, tp_group=g, attn_tp_size=2, attn_tp_rank=rank,
                                         attn_tp_group=g, moe_tp_size=2):
                yield
            return
        getters = {"get_tensor_model_parallel_world_size": 2, "get_tensor_model_parallel_rank": rank,
                   "get_attention_tp_size": 2, "get_attention_tp_rank": rank, "get_attention_dp_size": 1,
                   "get_attention_dp_rank": 0, "get_local_attention_dp_size": 1, "get_local_attention_dp_rank": 0}
        with pytest.MonkeyPatch.context() as mp:
            for mod in list(sys.modules.values()):
                if getattr(mod, "__name__", "").startswith("sglang.srt."):
                    for getter, value in getters.items():
                        if hasattr(mod, getter):
                            mp.setattr(mod, getter, lambda value=value: value)
            yield

    return scope


# Column-parallel (q/k/v, gate/up) and vocab-parallel (embedding, lm_head) shards are dim-0 rows.
ROW_READ = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "embed_tokens", "lm_head")


@pytest.mark.parametrize("rank", [0, 1])
def test_tensor_parallel_rank_reads_only_its_rows_and_loads_byte_identical(tmp_path, patched: Any, sim: Any,
                                                                          llama_factory: Any, tp_rank: Any,
                                                                          rank: int) -> None:
    """SGLang's real LlamaForCausalLM built as rank ``rank`` of TP=2, loaded through the real
    DefaultModelLoader._get_all_weights (traced, then row-read) and through upstream's iterator: every
    parameter byte-identical, the column/vocab-parallel tensors read as rows, fewer bytes crossed."""
    import types

    from sglang.srt.configs.load_config import LoadConfig
    from sglang.srt.model_loader.loader import DefaultModelLoader

    from cc_runtime.loading.header import read_header
    from cc_runtime.patches import sglang_loading as sl
    from cc_runtime.patches import sglang_loading_rows as rows_mod

    wu = patched
    config, build = llama_factory
    _llama_checkpoint(str(tmp_path), config)
    files = _files(str(tmp_path))
    total = sum(t.nbytes for f in files for t in read_header(f).tensors)
    with tp_rank(rank):
        assert rows_mod.tp_size() == 2
        reference = build()
        assert reference.model.layers[0].mlp.gate_up_proj.weight.shape[0] == config.intermediate_size  # sharded
        reference.load_weights(wu.safetensors_weights_iterator.__wrapped__(files))
        model = build()
        loader = DefaultModelLoader(LoadConfig())
        model_config = types.SimpleNamespace(model_path=str(tmp_path), revision=None, hf_config=config)
        before = sim.stats["bytes_h2d"]
        weights = loader._get_all_weights(model_config, model)
        for p in model.parameters():  # the trace ran above and must have written nothing
            assert bool((p.data.view(torch.uint8) == 0xA5).all())
        DefaultModelLoader.load_weights_and_postprocess(model, weights, torch.device("cpu"))
        crossed = sim.stats["bytes_h2d"] - before
    assert sl.LAST[-1][0] == "cc_runtime" and "row-read" in sl.LAST[-1][1], sl.LAST[-1]
    ref = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        assert same_bytes(p.data, ref[name].data), name
    split = rows_mod.LAST_SPLIT
    n_row_read = sum(1 for n in read_header(files[0]).tensors + read_header(files[1]).tensors
                     if any(k in n.name for k in ROW_READ))
    assert split["rows"] == n_row_read, split
    assert split["row_bytes"] * 2 == split["row_full_bytes"]  # half of each of those tensors
    assert crossed == total - split["row_bytes"] < total


def _load_as_rank(tmp_path: Any, wu: Any, llama_factory: Any, tp_rank: Any, rank: int,
                  patch_model: Any = None) -> tuple[Any, Any]:
    """(reference, model) for rank ``rank`` of TP=2: the reference loaded by upstream's iterator, the
    model through the real ``DefaultModelLoader._get_all_weights`` path (``patch_model`` may alter it first)."""
    import types

    from sglang.srt.configs.load_config import LoadConfig
    from sglang.srt.model_loader.loader import DefaultModelLoader

    config, build = llama_factory
    _llama_checkpoint(str(tmp_path), config)
    files = _files(str(tmp_path))
    with tp_rank(rank):
        reference = build()
        reference.load_weights(wu.safetensors_weights_iterator.__wrapped__(files))
        model = build()
        if patch_model is not None:
            patch_model(model)
        model_config = types.SimpleNamespace(model_path=str(tmp_path), revision=None, hf_config=config)
        weights = DefaultModelLoader(LoadConfig())._get_all_weights(model_config, model)
        DefaultModelLoader.load_weights_and_postprocess(model, weights, torch.device("cpu"))
    return reference, model


def _assert_identical(reference: Any, model: Any) -> None:
    ref = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        assert same_bytes(p.data, ref[name].data), name


def test_tensor_parallel_trace_failure_reads_everything_whole(tmp_path, patched: Any, sim: Any,
                                                              llama_factory: Any, tp_rank: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A load_weights that reads a tensor's values while traced: nothing is row-read, all is correct."""
    from cc_runtime.patches import sglang_loading as sl

    def peek_values(model: Any) -> None:
        real = model.load_weights

        def peeking(weights: Any) -> Any:
            def peek() -> Any:
                for name, w in weights:
                    float(w.reshape(-1)[0])  # a value read: untraceable
                    yield name, w
            return real(peek())

        monkeypatch.setattr(model, "load_weights", peeking)

    reference, model = _load_as_rank(tmp_path, patched, llama_factory, tp_rank, 1, peek_values)
    assert sl.LAST[-1][0] == "cc_runtime" and "row-read" not in sl.LAST[-1][1], sl.LAST[-1]
    _assert_identical(reference, model)


@pytest.mark.parametrize(("mode", "verified", "row_read"), [("off", True, False), ("auto", False, False),
                                                          ("on", False, True), ("auto", True, True)])
def test_tensor_parallel_rows_follow_the_setting(tmp_path, patched: Any, sim: Any, llama_factory: Any, tp_rank: Any,
                                                 monkeypatch: pytest.MonkeyPatch, mode: str, verified: bool,
                                                 row_read: bool) -> None:
    """CC_RUNTIME_LOAD_TP_ROWS: ``auto`` reads rows only for model classes proven here, ``on`` for any
    traced model, ``off`` never; the load is byte-identical every way."""
    from cc_runtime.patches import sglang_loading as sl
    from cc_runtime.patches import sglang_loading_rows as rows_mod

    monkeypatch.setenv("CC_RUNTIME_LOAD_TP_ROWS", mode)
    monkeypatch.setattr(rows_mod, "VERIFIED_MODELS", frozenset({"LlamaForCausalLM"} if verified else ()))
    reference, model = _load_as_rank(tmp_path, patched, llama_factory, tp_rank, 1)
    assert sl.LAST[-1][0] == "cc_runtime" and ("row-read" in sl.LAST[-1][1]) is row_read, sl.LAST[-1]
    _assert_identical(reference, model)
