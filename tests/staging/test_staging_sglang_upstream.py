"""The SGLang H2D staging patches against the REAL SGLang code (0.5.12 or 0.5.23, per nox session).

Runs only in the nox ``upstream-*`` sessions (``CC_RUNTIME_TEST_SGLANG`` names the version). Real:
``SamplingBatchInfo.from_schedule_batch`` (a prefill builder: temperatures, top-p, top-k, min-p),
``ScheduleBatch.filter_batch`` (a decode-step builder: keep indices, then device gathers),
``SamplingParams``, on 0.5.12 ``ForwardBatch.init_new`` (the forward-stream builder: extend lengths,
positions), and on 0.5.23 ``overlap_utils.resolve_forward_inputs`` (prefill ``input_ids`` at forward
entry) and ``utils.common.async_h2d``. A prefill step of these builders crosses twice (sampling inputs
on the schedule stream, forward inputs on the forward stream), a decode filter once. Stand-ins, only for what cannot exist on a CPU-only
machine: the GPU is the emulator's SimDevice under the h100 CC profile (real stream threads, CC's
host-synchronous copies), which lives on torch's "cpu" device, so the batches' device is "cpu" and the
patch is bound to the SimDevice for it (``sglang_staging.bind``); requests are namespaces carrying a
real ``SamplingParams``; SGLang's process-wide config (``get_exec`` / ``get_global_server_args``,
published from a model's config in a real server) is a namespace with the defaults.

Upstream's crossings are counted at the torch call (each ``host.to(device)`` / ``torch.tensor(...,
device=)`` is one crossing under CC); the patched crossings are counted by the simulated device.
"""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import cc_runtime  # noqa: E402
from cc_runtime import runtime  # noqa: E402
from cc_runtime.patching import installed_version  # noqa: E402

pytestmark = [pytest.mark.upstream, pytest.mark.timeout(300)]

PATCH_FOR = {"0.5.12": "sglang.h2d_staging", "0.5.23": "sglang.h2d_staging_primitives"}


@pytest.fixture
def sg(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    wanted = os.environ.get("CC_RUNTIME_TEST_SGLANG")
    if not wanted:
        pytest.skip("not in an upstream-* nox session (CC_RUNTIME_TEST_SGLANG unset)")
    pytest.importorskip("sglang")
    got = installed_version("sglang")
    assert got == wanted, f"session promised SGLang {wanted}, found {got}"
    if got not in PATCH_FOR:
        pytest.skip(f"no staging test recipe for SGLang {got}")
    from sglang.srt.managers import schedule_batch
    from sglang.srt.sampling import sampling_batch_info
    from sglang.srt.sampling.sampling_params import SamplingParams

    config = SimpleNamespace(
        deterministic=SimpleNamespace(enable_deterministic_inference=False),
        features=SimpleNamespace(enable_custom_logit_processor=False, enable_watermark=False),
        enable_deterministic_inference=False, enable_custom_logit_processor=False)
    for name in ("get_exec", "get_global_server_args"):
        if hasattr(sampling_batch_info, name):
            monkeypatch.setattr(sampling_batch_info, name, lambda: config)
    return SimpleNamespace(version=got, SBI=sampling_batch_info.SamplingBatchInfo, SP=SamplingParams,
                           ScheduleBatch=schedule_batch.ScheduleBatch, schedule_batch=schedule_batch)


@pytest.fixture
def sim() -> Any:
    from cc_runtime.emulator import SimDevice

    dev = SimDevice("h100", name="cuda-standin")
    yield dev
    dev.shutdown(timeout=5)


@pytest.fixture
def patched(sg: SimpleNamespace, sim: Any) -> Any:
    from cc_runtime.patches import sglang_staging

    runtime._reset_for_tests()
    cc_runtime.activate(cc="1")
    rec = runtime.manager().records[PATCH_FOR[sg.version]]
    assert rec.status == "applied", (rec.status, rec.reason)
    sglang_staging.bind("cpu", sim)  # the SimDevice stands in for the GPU on torch's cpu device
    yield rec
    runtime._reset_for_tests()


class CountUpstreamCopies:
    """Counts host->device copies made by upstream code at the torch call (unpatched runs)."""

    def __init__(self) -> None:
        from torch.overrides import TorchFunctionMode

        counter = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func in (torch.Tensor.to, torch._C.TensorBase.to) and args and args[0].device.type == "cpu" \
                        and any(isinstance(a, (str, torch.device)) for a in (*args[1:], *kwargs.values())):
                    counter.n += 1
                elif func is torch.tensor and kwargs.get("device") is not None:
                    counter.n += 1
                return func(*args, **kwargs)

        self.n = 0
        self.mode = Mode()

    def __enter__(self) -> CountUpstreamCopies:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


def _req(sg: SimpleNamespace, i: int, finished: bool = False) -> Any:
    sp = sg.SP(temperature=0.5 + i, top_p=0.9 - 0.1 * i, top_k=20 + i, min_p=0.05 * i)
    return SimpleNamespace(sampling_params=sp, return_sampling_mask=False, sampling_logprobs_mode=None,
                           custom_logit_processor=None, finished=lambda: finished, return_logprob=False,
                           stream=False, grammar=None, lora_id=None, rid=f"r{i}", return_hidden_states=False,
                           return_hidden_states_mode=_no_capture(sg), is_beam=False)


def _no_capture(sg: SimpleNamespace) -> Any:
    mode = getattr(sg.schedule_batch, "CaptureHiddenMode", None)
    return mode.NULL if mode is not None else None


SAMPLING_FIELDS = ("temperatures", "top_ps", "top_ks", "min_ps")


class _Batch(SimpleNamespace):
    """The fields of a ScheduleBatch that ``from_schedule_batch`` reads (weak-referenceable, as upstream needs)."""


def _sampling(sg: SimpleNamespace, reqs: list[Any]) -> Any:
    return sg.SBI.from_schedule_batch(_Batch(reqs=reqs, device="cpu"), vocab_size=128)


def _on_device(sim: Any, t: Any) -> bool:
    return bool(sim.is_device(t) or (t._base is not None and sim.is_device(t._base)))


def _assert_same(want: Any, got: Any, name: str) -> None:
    assert isinstance(got, torch.Tensor), name
    assert (got.dtype, tuple(got.shape)) == (want.dtype, tuple(want.shape)), name
    assert torch.equal(got, want), name


def test_prefill_sampling_inputs_identical_and_cross_once(sg, sim):
    reqs = [_req(sg, i) for i in range(5)]
    with CountUpstreamCopies() as upstream:
        want = _sampling(sg, reqs)
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1")
    from cc_runtime.patches import sglang_staging

    sglang_staging.bind("cpu", sim)
    before = sim.stats["copies_h2d"]
    got = _sampling(sg, reqs)
    crossings = sim.stats["copies_h2d"] - before
    assert upstream.n >= 4, "upstream copies temperatures, top-p, top-k and min-p separately"
    assert crossings == 1, f"patched: {crossings} crossings (upstream {upstream.n})"
    for name in SAMPLING_FIELDS:
        assert _on_device(sim, getattr(got, name)), name
        _assert_same(getattr(want, name), getattr(got, name), name)


def _decode_batch(sg: SimpleNamespace, reqs: list[Any]) -> Any:
    """A real ScheduleBatch in the state filter_batch reads after a decode step."""
    b = object.__new__(sg.ScheduleBatch)
    bs = len(reqs)
    fields = dict(
        reqs=reqs, device="cpu", model_config=SimpleNamespace(is_encoder_decoder=False), multimodal_inputs=None,
        req_pool_indices=torch.arange(10, 10 + bs), req_pool_indices_cpu=torch.arange(10, 10 + bs), seq_lens=torch.arange(100, 100 + bs),
        seq_lens_cpu=torch.arange(100, 100 + bs), orig_seq_lens=torch.arange(200, 200 + bs, dtype=torch.int32),
        output_ids=torch.arange(1000, 1000 + bs), input_ids=None, out_cache_loc=None, seq_lens_sum=None,
        spec_info=None, is_spec_v2=False, return_logprob=False, top_logprobs_nums=None, token_ids_logprobs=None,
        sampling_info=_sampling(sg, reqs), has_stream=False, has_grammar=False, return_hidden_states=False,
        spec_algorithm=SimpleNamespace(is_none=lambda: True), beam_tail=None, beam_info=None,
        hisparse_coordinator=None, mamba_track_indices=None, encoder_lens=None,
    )
    for k, v in fields.items():
        if not isinstance(getattr(type(b), k, None), property):  # derived fields stay derived
            setattr(b, k, v)
    return b


def _filtered(batch: Any) -> dict[str, Any]:
    out = {k: getattr(batch, k) for k in ("req_pool_indices", "seq_lens", "orig_seq_lens")}
    out.update({f"sampling.{k}": getattr(batch.sampling_info, k) for k in SAMPLING_FIELDS})
    return out


def test_decode_filter_identical_and_one_crossing(sg, sim, monkeypatch):
    if hasattr(sg.schedule_batch, "strip_beam_tail"):
        monkeypatch.setattr(sg.schedule_batch, "strip_beam_tail", lambda batch: None)  # no beam search here
    reqs = [_req(sg, i, finished=(i == 1)) for i in range(4)]
    ref = _decode_batch(sg, reqs)
    with CountUpstreamCopies() as upstream:
        ref.filter_batch()
    want = _filtered(ref)
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1")
    from cc_runtime.patches import sglang_staging

    sglang_staging.bind("cpu", sim)
    batch = _decode_batch(sg, reqs)
    before = sim.stats["copies_h2d"]
    batch.filter_batch()
    crossings = sim.stats["copies_h2d"] - before
    assert upstream.n == 1 and crossings == 1, (upstream.n, crossings)
    got = _filtered(batch)
    for name in want:
        _assert_same(want[name], got[name], name)
    assert [r.rid for r in batch.reqs] == ["r0", "r2", "r3"]


def test_staged_inputs_do_not_wait_behind_the_queued_forward(sg, sim, patched):
    reqs = [_req(sg, i) for i in range(3)]
    fwd = sim.Stream(name="forward")
    gate = threading.Event()
    with sim.stream(fwd):  # the builder runs on the forward stream while a forward is still queued
        sim.launch(lambda: gate.wait(30), 0.0)
        t0 = time.perf_counter()
        got = _sampling(sg, reqs)
        elapsed = time.perf_counter() - t0
        reads = []
        sim.launch(lambda: reads.append(got.top_ks.tolist()), 0.0)  # the next forward reads the inputs
    gate.set()
    fwd.synchronize()
    assert elapsed < 10, "an input copy waited for the gated forward"
    assert reads == [[20, 21, 22]]


def test_0_5_23_resolve_forward_inputs_and_async_h2d_are_staged(sg, sim, patched):
    if sg.version != "0.5.23":
        pytest.skip("resolve_forward_inputs / async_h2d are 0.5.23 patch points")
    from sglang.srt.managers import overlap_utils
    from sglang.srt.utils import common

    batch = SimpleNamespace(prefill_input_ids_cpu=torch.arange(37, dtype=torch.int64), device="cpu",
                            mix_running_indices=None, enable_overlap=False, input_ids=None,
                            spec_algorithm=SimpleNamespace(is_none=lambda: True))
    before = sim.stats["copies_h2d"]
    overlap_utils.resolve_forward_inputs(batch, SimpleNamespace(spec_algo=SimpleNamespace(is_none=lambda: True)))
    assert sim.stats["copies_h2d"] - before == 1
    assert _on_device(sim, batch.input_ids) and batch.input_ids.tolist() == list(range(37))

    fwd = sim.Stream(name="forward")
    gate = threading.Event()
    with sim.stream(fwd):
        sim.launch(lambda: gate.wait(30), 0.0)
        t0 = time.perf_counter()
        out = common.async_h2d([5, 6, 7], dtype=torch.int32, device="cpu")
        elapsed = time.perf_counter() - t0
    gate.set()
    fwd.synchronize()
    assert elapsed < 10 and out.dtype == torch.int32 and out.tolist() == [5, 6, 7] and _on_device(sim, out)


def test_deactivate_restores_every_patched_object(sg, sim):
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

    def snapshot() -> tuple[Any, ...]:
        objs = [sg.ScheduleBatch.__dict__.get(n) for n in ("prepare_for_extend", "prepare_for_decode",
                                                            "filter_batch", "merge_batch")]
        objs += [ForwardBatch.__dict__["init_new"], sg.SBI.__dict__["from_schedule_batch"]]
        if sg.version == "0.5.23":
            from sglang.srt.managers import overlap_utils
            from sglang.srt.utils import common

            objs += [common.async_h2d, common.async_h2d_stack, overlap_utils.resolve_forward_inputs,
                     sg.schedule_batch.async_h2d]
        return tuple(objs)

    original = snapshot()
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1")
    try:
        changed = snapshot()
        assert all(a is not b for a, b in zip(original, changed, strict=True) if a is not None)
    finally:
        runtime.deactivate()
    assert snapshot() == original
    from cc_runtime.patches import sglang_staging

    assert not sglang_staging.STATE.stagers
    runtime._reset_for_tests()


_MWB_FIELDS = (
    "input_ids", "req_pool_indices", "seq_lens", "out_cache_loc", "mamba_track_indices", "mamba_track_mask",
    "mamba_track_seqlens", "multimodal_inputs", "encoder_cached", "encoder_lens", "encoder_lens_cpu",
    "encoder_out_cache_loc", "seq_lens_sum", "seq_lens_cpu", "orig_seq_lens", "return_logprob",
    "top_logprobs_nums", "token_ids_logprobs", "is_extend_in_batch", "all_extend_in_batch",
    "can_run_dp_cuda_graph", "global_forward_mode", "is_prefill_only", "multi_item_delimiter_indices",
    "lora_ids", "sampling_info", "spec_algorithm", "spec_info", "capture_hidden_mode", "input_embeds",
    "replace_embeds", "replace_positions", "token_type_ids", "tbo_split_seq_index", "dimensions",
    "return_hidden_states_before_norm", "return_pooled_hidden_states", "extend_input_logprob_token_ids",
    "global_num_tokens", "global_num_tokens_for_logprob", "dllm_config", "extend_seq_lens",
    "extend_prefix_lens", "extend_num_tokens", "extend_logprob_start_lens", "reqs")


def test_0_5_12_forward_batch_init_new_prefill_inputs_identical_and_one_crossing(sg, sim, monkeypatch):
    """0.5.12's forward-stream builder: num_token_non_padded, extend seq/prefix lens, then positions."""
    if sg.version != "0.5.12":
        pytest.skip("0.5.23's init_new takes a ScheduleBatch and a KV-index translator; not driven here")
    from sglang.srt.model_executor import forward_batch_info as fbi

    monkeypatch.setattr(fbi, "enable_num_token_non_padded", lambda: True)  # the MoE-EP site, on
    prefix, extend = [0, 5, 2], [4, 3, 6]

    def worker_batch() -> Any:
        mwb = SimpleNamespace(**dict.fromkeys(_MWB_FIELDS))
        mwb.forward_mode = fbi.ForwardMode.EXTEND
        mwb.input_ids = torch.arange(sum(extend))
        mwb.seq_lens = torch.tensor([p + e for p, e in zip(prefix, extend, strict=True)])
        mwb.extend_seq_lens, mwb.extend_prefix_lens, mwb.extend_num_tokens = extend, prefix, sum(extend)
        mwb.lora_ids, mwb.reqs = [None] * 3, [SimpleNamespace(rid=f"r{i}") for i in range(3)]
        return mwb

    runner = SimpleNamespace(device="cpu", req_to_token_pool=None, token_to_kv_pool=None, attn_backend=None,
                             server_args=SimpleNamespace(attention_backend="torch_native", enable_lora=False),
                             use_ngram_embedding=False, model_is_mrope=False, is_hybrid_swa=False)
    with CountUpstreamCopies() as upstream:
        want = fbi.ForwardBatch.init_new(worker_batch(), runner)
    runtime._reset_for_tests()
    cc_runtime.activate(cc="1")
    from cc_runtime.patches import sglang_staging

    sglang_staging.bind("cpu", sim)
    before = sim.stats["copies_h2d"]
    got = fbi.ForwardBatch.init_new(worker_batch(), runner)
    crossings = sim.stats["copies_h2d"] - before
    assert (upstream.n, crossings) == (3, 1)
    for name in ("num_token_non_padded", "extend_seq_lens", "extend_prefix_lens", "positions", "extend_start_loc"):
        _assert_same(getattr(want, name), getattr(got, name), name)
    assert _on_device(sim, got.extend_seq_lens)


def test_off_cc_nothing_is_patched(sg):
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

    before = (sg.ScheduleBatch.__dict__["prepare_for_extend"], ForwardBatch.__dict__["init_new"],
              sg.SBI.__dict__["from_schedule_batch"])
    runtime._reset_for_tests()
    cc_runtime.activate(cc="0")
    try:
        assert runtime.manager().records[PATCH_FOR[sg.version]].status != "applied"
        assert (sg.ScheduleBatch.__dict__["prepare_for_extend"], ForwardBatch.__dict__["init_new"],
                sg.SBI.__dict__["from_schedule_batch"]) == before
    finally:
        runtime._reset_for_tests()
