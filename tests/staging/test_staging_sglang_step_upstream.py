"""Whole-step H2D crossings of SGLang's real builder chain (0.5.12 and 0.5.23), with and without the patch.

A step, as the scheduler runs it: a prefill step is ``ScheduleBatch.init_new`` -> ``prepare_for_extend``
(``alloc_for_extend``, ``SamplingBatchInfo.from_schedule_batch``) -> on 0.5.12 ``get_model_worker_batch``
-> ``ForwardBatch.init_new``, on 0.5.23 ``overlap_utils.resolve_forward_inputs`` -> ``ForwardBatch.init_new``;
a decode step is (``filter_batch`` when a request finished) -> ``prepare_for_decode`` (``alloc_for_decode``)
-> the same forward-side builders. All of it is SGLang's own code, and so are the request (``Req``,
``SamplingParams``), the ``ReqToTokenPool``, the ``TokenToKVPoolAllocator``, the chunk cache (0.5.12
``ChunkCache``, 0.5.23 ``RadixCache(disable=True)``), and on 0.5.23 the ``FutureMap`` relaying sampled
tokens and the ``KVIndexTranslator`` (all construct on CPU). 0.5.23's config is published with SGLang's
own ``override_server_args``; 0.5.12's is a ``ServerArgs`` with the CLI defaults (its ``__post_init__``
probes a GPU).

Stand-ins, only for what cannot exist on a CPU-only machine:

* the GPU: the emulator's SimDevice (h100 CC profile) on torch's "cpu" device, bound to the patch;
* the model runner: a namespace with the attributes ``ForwardBatch.init_new`` reads (a real
  ``ModelRunner`` loads a model onto a GPU); the model config likewise (no model is loaded);
* the parallel groups: ``enable_num_token_non_padded`` (true under MoE expert parallelism, read from
  torch.distributed groups that need a launched job) is set per case, and ``global_num_tokens`` (set by
  the scheduler's DP-attention sync) is set on the batch in the DP case;
* the attention backend is ``torch_native``, whose ``alloc_for_extend`` writes the req-to-token table on
  the host side; the Triton path's ``write_req_to_token_pool_triton`` (Triton needs a GPU) is a stand-in
  launcher that reads its arguments' ``data_ptr()`` as Triton's does, in its own test.

Counts: every host->device copy that reaches torch (each is one crossing under CC; upstream's, and any the
patch left alone), plus, patched, the stager's packed copies as the simulated device counts them.
"""

from __future__ import annotations

import dataclasses
import importlib
from array import array
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import cc_runtime  # noqa: E402
from cc_runtime import runtime  # noqa: E402

pytestmark = [pytest.mark.upstream, pytest.mark.timeout(300)]

PATCH_FOR = {"0.5.12": "sglang.h2d_staging", "0.5.23": "sglang.h2d_staging_primitives"}
PROMPTS = ([0, 1, 2, 3], [10, 11, 12, 13, 14], [20, 21, 22, 23, 24, 25])


@pytest.fixture
def sg(sglang_version: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    if sglang_version not in ("0.5.12", "0.5.23"):
        pytest.skip(f"no whole-step recipe for SGLang {sglang_version}")
    from sglang.srt.managers import schedule_batch
    from sglang.srt.model_executor import forward_batch_info

    ns = SimpleNamespace(version=sglang_version, sb=schedule_batch, fbi=forward_batch_info)
    monkeypatch.setattr(forward_batch_info, "enable_num_token_non_padded", lambda: False)
    if sglang_version == "0.5.23":
        from sglang.srt.runtime_context import get_context

        override = get_context().override_server_args(attention_backend="torch_native", device="cpu")
        ns.server_args = override.install()  # SGLang's own test hook: a published dummy config
        yield ns
        override.restore()
        return
    from sglang.srt import server_args

    args = object.__new__(server_args.ServerArgs)  # the CLI's defaults; __post_init__ probes a GPU
    for f in dataclasses.fields(server_args.ServerArgs):
        if f.default is not dataclasses.MISSING:
            setattr(args, f.name, f.default)
        elif f.default_factory is not dataclasses.MISSING:
            setattr(args, f.name, f.default_factory())
    args.model_path, args.attention_backend = "stand-in/model", "torch_native"
    monkeypatch.setattr(server_args, "_global_server_args", args)
    ns.server_args = args
    yield ns


@pytest.fixture
def sim() -> Any:
    from cc_runtime.emulator import SimDevice

    dev = SimDevice("h100", name="cuda-standin")
    yield dev
    dev.shutdown(timeout=5)


class Step:
    """One request set, pools and allocator as a scheduler holds them; drives the real builders."""

    def __init__(self, sg: SimpleNamespace, *, moe_ep: bool, dp: bool) -> None:
        from sglang.srt.mem_cache.cache_init_params import CacheInitParams
        from sglang.srt.mem_cache.memory_pool import ReqToTokenPool
        from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

        self.sg, self.dp, self.new = sg, dp, sg.version == "0.5.23"
        sg.fbi.enable_num_token_non_padded = lambda: moe_ep  # stand-in for the EP group size (restored by sg)
        pool = ReqToTokenPool(size=8, max_context_len=64, device="cpu", enable_memory_saver=False)
        if self.new:
            from sglang.srt.mem_cache.allocator.token import TokenToKVPoolAllocator
            from sglang.srt.mem_cache.radix_cache import RadixCache as Cache  # disable=True: chunk-cache mode
        else:
            from sglang.srt.mem_cache.allocator import TokenToKVPoolAllocator
            from sglang.srt.mem_cache.chunk_cache import ChunkCache as Cache
        alloc = TokenToKVPoolAllocator(size=256, dtype=torch.float16, device="cpu", kvcache=None, need_sort=False)
        cache = Cache(CacheInitParams(disable=True, req_to_token_pool=pool, token_to_kv_pool_allocator=alloc,
                                      page_size=1))
        self.pool, self.alloc, self.cache = pool, alloc, cache
        reqs = self._reqs(PROMPTS)
        model_config = SimpleNamespace(  # stand-in: no model is loaded
            is_encoder_decoder=False, is_matryoshka=False, vocab_size=128, hidden_size=16, model_is_mrope=False,
            requires_mm_token_modalities=False)
        self.model_config = model_config
        self.batch = self._batch(reqs)
        if self.new:
            from sglang.srt.managers.overlap_utils import FutureMap
            from sglang.srt.mem_cache.kv_index_translator import KVIndexTranslator

            self.future_map = FutureMap(torch.device("cpu"), SpeculativeAlgorithm.NONE, pool)
            translator = KVIndexTranslator(req_to_token=pool.req_to_token, token_to_kv_pool_allocator=alloc,
                                           token_to_kv_pool=None, page_size=1, device="cpu")
            self.runner = SimpleNamespace(  # stand-in: what init_new reads of a ModelRunner
                device="cpu", is_draft_worker=False, model_config=model_config, kv_index_translator=translator,
                prefill_attention_backend_str="torch_native", lora_manager=None,
                ngram_embedding_manager=SimpleNamespace(enabled=False))
        else:
            self.runner = SimpleNamespace(
                device="cpu", req_to_token_pool=pool, token_to_kv_pool=None, attn_backend=None,
                token_to_kv_pool_allocator=alloc, server_args=sg.server_args, use_ngram_embedding=False,
                model_is_mrope=False, is_hybrid_swa=False)

    def _reqs(self, prompts: tuple[list[int], ...], first: int = 0) -> list[Any]:
        from sglang.srt.sampling.sampling_params import SamplingParams

        reqs = []
        for i, ids in enumerate(prompts, start=first):
            sp = SamplingParams(temperature=0.5 + i, top_p=0.9 - 0.1 * i, top_k=20 + i, max_new_tokens=8)
            sp.normalize(None)
            if self.new:  # what the scheduler's admission (init_next_round_input) leaves on a fresh request
                r = self.sg.sb.Req(f"r{i}", "", array("q", ids), sp, vocab_size=128)
                r.refresh_fill_ids()
                r.prefix_len, r.extend_end = 0, len(ids)
            else:
                r = self.sg.sb.Req(f"r{i}", "", list(ids), sp, vocab_size=128)
                r.fill_ids, r.prefix_indices = r.origin_input_ids, torch.empty(0, dtype=torch.int64)
                r.extend_input_len = len(ids)
            reqs.append(r)
        return reqs

    def _batch(self, reqs: list[Any]) -> Any:
        from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

        return self.sg.sb.ScheduleBatch.init_new(reqs, self.pool, self.alloc, self.cache, self.model_config,
                                                 False, SpeculativeAlgorithm.NONE)

    def mixed(self) -> Any:
        """A mixed chunk (the scheduler's get_new_batch_prefill): new prefills plus the running decodes."""
        running = self.batch
        self._sampled(running)
        new = self._batch(self._reqs(([40, 41, 42], [50, 51]), first=len(PROMPTS)))
        new.prepare_for_extend()
        running.prepare_for_decode()
        new.mix_with_running(running)
        new.decoding_reqs = running.reqs
        self.batch = new
        return self._forward_batch()

    def _sampled(self, b: Any) -> None:
        sampled = b.seq_lens + 100  # the last sampled tokens, on the device as the sampler leaves them
        if self.new:  # 0.5.23 relays them through the future map; input_ids resolve at forward entry
            self.future_map.output_tokens_buf[b.req_pool_indices] = sampled
            b.input_ids = None
        else:
            b.output_ids = sampled

    def _forward_batch(self) -> Any:
        b, fbi = self.batch, self.sg.fbi
        if self.new:  # Scheduler.run_batch: input ids at forward entry, then the worker's init_new
            from sglang.srt.managers import overlap_utils

            overlap_utils.resolve_forward_inputs(b, self.future_map)
        if self.dp:  # the scheduler's DP-attention sync sets these before the forward batch
            n = len(b.input_ids)
            b.global_num_tokens = b.global_num_tokens_for_logprob = [n, n]
        if self.new:
            return fbi.ForwardBatch.init_new(b, self.runner, return_hidden_states_before_norm=False)
        return fbi.ForwardBatch.init_new(b.get_model_worker_batch(), self.runner)

    def prefill(self) -> Any:
        self.batch.prepare_for_extend()
        return self._forward_batch()

    def decode(self, *, finish: int | None = None) -> Any:
        b = self.batch
        self._sampled(b)
        if finish is not None:
            b.reqs[finish].finished_reason = self.sg.sb.FINISH_LENGTH(length=8)
            b.filter_batch()
        b.prepare_for_decode()
        return self._forward_batch()


FORWARD_FIELDS = ("input_ids", "req_pool_indices", "seq_lens", "out_cache_loc", "orig_seq_lens", "positions",
                  "extend_seq_lens", "extend_prefix_lens", "extend_start_loc", "num_token_non_padded",
                  "global_num_token_non_padded", "global_num_tokens_gpu", "global_num_tokens_for_logprob_gpu")
SAMPLING_FIELDS = ("temperatures", "top_ps", "top_ks", "min_ps")


def _tensors(fb: Any) -> dict[str, Any]:
    out = {k: getattr(fb, k, None) for k in FORWARD_FIELDS}
    out.update({f"sampling.{k}": getattr(fb.sampling_info, k) for k in SAMPLING_FIELDS})
    return {k: v for k, v in out.items() if v is not None}


class Crossings:
    """Host->device copies that reach torch (each one crossing under CC: upstream's, and any the patch left
    alone), plus, patched, the stager's packed copies as the simulated device counts them."""

    def __init__(self, sim: Any | None) -> None:
        from torch.overrides import TorchFunctionMode

        counter = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func in (torch.Tensor.to, torch._C.TensorBase.to) and args and args[0].device.type == "cpu" \
                        and not (sim is not None and sim.is_device(args[0])) and any(isinstance(a, (str, torch.device)) for a in (*args[1:], *kwargs.values())):
                    counter.direct += 1
                elif func is torch.tensor and kwargs.get("device") is not None:
                    counter.direct += 1
                return func(*args, **kwargs)

        self.sim, self.direct, self.staged, self.mode = sim, 0, 0, Mode()

    @property
    def n(self) -> int:
        return self.direct + self.staged

    def __enter__(self) -> Crossings:
        self.before = self.sim.stats["copies_h2d"] if self.sim is not None else 0
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)
        if self.sim is not None:
            self.staged = self.sim.stats["copies_h2d"] - self.before


def _run(sg: SimpleNamespace, sim: Any | None, case: dict[str, bool], finish: Any) -> tuple[list[int], list[dict[str, Any]]]:
    """Crossings of [prefill, decode] and the forward's device tensors of each, patched iff ``sim``."""
    runtime._reset_for_tests()
    if sim is not None:
        from cc_runtime.patches import sglang_staging

        cc_runtime.activate(cc="1")
        rec = runtime.manager().records[PATCH_FOR[sg.version]]
        assert rec.status == "applied", (rec.status, rec.reason)
        sglang_staging.bind("cpu", sim)  # the SimDevice stands in for the GPU on torch's cpu device
    step = Step(sg, **case)
    counts, tensors = [], []
    for run in (step.prefill, step.mixed if finish == "mixed" else lambda: step.decode(finish=finish)):
        with Crossings(sim) as c:
            fb = run()
        counts.append(c.n)
        tensors.append({k: v.clone() for k, v in _tensors(fb).items()})
    runtime._reset_for_tests()
    return counts, tensors


CASES = {"tp1": dict(moe_ep=False, dp=False), "moe_ep": dict(moe_ep=True, dp=False),
         "moe_ep_dp_attention": dict(moe_ep=True, dp=True)}


@pytest.mark.parametrize("case", list(CASES))
def test_whole_step_crossings_and_identical_forward_inputs(sg, sim, case):
    (up_prefill, up_decode), want = _run(sg, None, CASES[case], finish=None)
    (prefill, decode), got = _run(sg, sim, CASES[case], finish=None)

    assert up_prefill >= 6, f"upstream prefill crossed {up_prefill} times"  # the cost the patch removes
    assert prefill <= 2, f"patched prefill step: {prefill} crossings (upstream {up_prefill})"
    assert decode <= 1, f"patched decode step: {decode} crossings (upstream {up_decode})"
    assert decode == min(up_decode, 1), (decode, up_decode)  # a decode that copies anything copies once
    for w, g in zip(want, got, strict=True):
        assert w.keys() == g.keys()
        for name in w:
            assert (w[name].dtype, w[name].shape) == (g[name].dtype, g[name].shape), name
            assert torch.equal(w[name], g[name]), name


class TritonWriteStandIn:
    """Stand-in for ``write_req_to_token_pool_triton`` (Triton needs a GPU): its launcher reads every
    tensor argument's ``data_ptr()`` at launch, as Triton's does; then the kernel's effect, on the host."""

    def __getitem__(self, grid: Any) -> Any:
        def launch(req_to_token, req_pool_indices, prefix_pointers, prefix_lens, seq_lens, extend_lens,
                   out_cache_loc, stride):
            for t in (req_to_token, req_pool_indices, prefix_pointers, prefix_lens, seq_lens, extend_lens,
                      out_cache_loc):
                t.data_ptr()
            start = 0
            for row, pre, seq in zip(req_pool_indices.tolist(), prefix_lens.tolist(), seq_lens.tolist(),
                                     strict=True):
                assert pre == 0, "the stand-in writes fresh requests only (prefix pointers are host addresses)"
                req_to_token[row, :seq] = out_cache_loc[start: start + seq].to(req_to_token.dtype)
                start += seq

        return launch


def test_prefill_step_with_a_triton_allocation_path(sg, sim, monkeypatch):
    """Triton-capable backends write the req-to-token table with a kernel inside ``alloc_for_extend``: the
    launch reads the builder's pending inputs, so they cross there. The sampling inputs (and on 0.5.23 the
    prefill input_ids), made after it, are pre-staged before it and ride that crossing: two per prefill step,
    the builder's and ``ForwardBatch.init_new``'s (see the patch docstring)."""
    module = importlib.import_module("sglang.srt.mem_cache." + ("allocation" if sg.version == "0.5.23" else "common"))
    monkeypatch.setattr(module, "support_triton", lambda backend: True)
    monkeypatch.setattr(module, "write_req_to_token_pool_triton", TritonWriteStandIn())
    (up_prefill, _), want = _run(sg, None, CASES["moe_ep"], finish=None)
    (prefill, decode), got = _run(sg, sim, CASES["moe_ep"], finish=None)
    assert (up_prefill, prefill, decode) == (up_prefill, 2, 1) and up_prefill >= 10, (up_prefill, prefill)
    for w, g in zip(want, got, strict=True):
        for name in w:
            assert torch.equal(w[name], g[name]), name


def test_mixed_step(sg, sim):
    """New prefills mixed with the running decodes: the prefill builder, the running batch's
    ``prepare_for_decode``, ``mix_with_running`` (``merge_batch``), then the forward-side builders."""
    (_, up_mixed), want = _run(sg, None, CASES["moe_ep"], finish="mixed")
    (_, mixed), got = _run(sg, sim, CASES["moe_ep"], finish="mixed")
    assert up_mixed >= 10 and mixed == 2, (up_mixed, mixed)
    for name in want[1]:
        assert torch.equal(want[1][name], got[1][name]), name
    assert got[1]["input_ids"].tolist() == [40, 41, 42, 50, 51, 104, 105, 106]


def test_decode_step_after_a_request_finished(sg, sim):
    """filter_batch's keep-indices are read by its own gathers at once: they cannot ride init_new's copy."""
    (_, up_decode), want = _run(sg, None, CASES["moe_ep"], finish=1)
    (_, decode), got = _run(sg, sim, CASES["moe_ep"], finish=1)

    assert up_decode == 2 and decode == 2, (up_decode, decode)
    for name in want[1]:
        assert torch.equal(want[1][name], got[1][name]), name
    assert got[1]["input_ids"].tolist() == [104, 106]  # requests 0 and 2 go on


def test_0_5_23_rebuilt_prefill_ids_are_copied_at_forward_entry(sg, sim):
    """The builder's copy of input_ids stands in only for the very host tensor it copied."""
    if sg.version != "0.5.23":
        pytest.skip("prefill_input_ids_cpu / resolve_forward_inputs are 0.5.23's")
    from sglang.srt.managers import overlap_utils

    from cc_runtime.patches import sglang_staging

    runtime._reset_for_tests()
    cc_runtime.activate(cc="1")
    sglang_staging.bind("cpu", sim)
    step = Step(sg, moe_ep=False, dp=False)
    step.batch.prepare_for_extend()
    rebuilt = step.batch.prefill_input_ids_cpu + 1000  # as a merge or an encoder replay rebuilds it
    step.batch.prefill_input_ids_cpu = rebuilt
    with Crossings(sim) as c:
        overlap_utils.resolve_forward_inputs(step.batch, step.future_map)
    assert c.n == 1
    assert torch.equal(step.batch.input_ids, rebuilt) and step.batch.prefill_input_ids_cpu is None
