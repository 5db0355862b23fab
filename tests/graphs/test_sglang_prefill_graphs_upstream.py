"""Which prefill path real SGLang chooses, for a CC state (off / forced / emulated) and server arguments.

Runs the real server-argument resolution steps of the SGLang version this session installed
(``CC_RUNTIME_TEST_SGLANG``): 0.5.12 ``ServerArgs._handle_piecewise_cuda_graph`` then
``_handle_gpu_memory_settings`` (the order ``__post_init__`` runs them); 0.5.23
``handle_cuda_graph_config`` then ``handle_gpu_memory_settings`` through its ``run_hook``.

Stand-ins, only for what a CPU box cannot have: the ModelConfig (it needs the checkpoint's HF config;
its flags are computed with upstream's own ``is_multimodal_model`` & co. from the architecture name),
the GPU's memory capacity (an 80 GB H100: 81559 MiB) and, on 0.5.23, ``is_cuda()`` (prefill graphs
default on only on CUDA).
"""

from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace

import pytest

pytestmark = [pytest.mark.upstream, pytest.mark.timeout(300)]

H100_MEM_MIB = 81559
QWEN35 = "Qwen3_5MoeForConditionalGeneration"  # multimodal (NVIDIA's CC benchmark model)
LLAMA = "LlamaForCausalLM"


def _require(version: str):
    session = os.environ.get("CC_RUNTIME_TEST_SGLANG")
    if session and session != version:
        pytest.skip(f"this session tests SGLang {session}")
    sglang = pytest.importorskip("sglang")
    if getattr(sglang, "__version__", None) != version:
        pytest.skip(f"needs SGLang {version}, found {getattr(sglang, '__version__', '?')}")


@pytest.fixture(params=["off", "forced", "emulated"])
def cc(request):
    from cc_runtime import runtime

    runtime._reset_for_tests()
    kwargs = {"off": {"cc": "0"}, "forced": {"cc": "1"}, "emulated": {"emulate": "h100"}}[request.param]
    state = runtime.activate(**kwargs)
    assert state.enabled == (request.param != "off")
    yield request.param
    runtime._reset_for_tests()


def _status(name: str) -> str:
    from cc_runtime import runtime

    return next(r["status"] for r in runtime.manager().as_list() if r["name"] == name)


# -- SGLang 0.5.12 ---------------------------------------------------------------------------------
def _args_0_5_12(arch: str, **kw):
    from sglang.srt import server_args as sa
    from sglang.srt.configs import model_config as mc

    args = object.__new__(sa.ServerArgs)  # fields as the CLI leaves them, before __post_init__
    for f in dataclasses.fields(sa.ServerArgs):
        if f.default is not dataclasses.MISSING:
            setattr(args, f.name, f.default)
        elif f.default_factory is not dataclasses.MISSING:
            setattr(args, f.name, f.default_factory())
    args.model_path = "stand-in/model"
    for key, value in kw.items():
        setattr(args, key, value)
    args.model_config = SimpleNamespace(  # what get_model_config() caches
        is_multimodal=mc.is_multimodal_model([arch]),
        is_piecewise_cuda_graph_disabled_model=mc.is_piecewise_cuda_graph_disabled_model([arch]),
        hf_config=SimpleNamespace(architectures=[arch]), attention_arch=None)
    return args


def _resolve_0_5_12(arch: str, **kw) -> dict:
    from cc_runtime.patches.sglang_prefill_graphs import prefill_path_0_5_12

    args = _args_0_5_12(arch, **kw)
    args._handle_piecewise_cuda_graph()
    args._handle_gpu_memory_settings(H100_MEM_MIB)
    return prefill_path_0_5_12(args)


def test_0_5_12_multimodal_gets_piecewise_graphs_under_cc(cc):
    _require("0.5.12")
    path = _resolve_0_5_12(QWEN35)
    if cc == "off":
        assert path["runner"] == "eager"  # upstream: every multimodal model
        assert _status("sglang.prefill_graphs_0_5_12") == "disabled"
    else:
        assert _status("sglang.prefill_graphs_0_5_12") == "applied"
        # the same capped size list a text model gets under CC (upstream's sizes up to 4096)
        assert path == {**_resolve_0_5_12(LLAMA), "runner": "piecewise", "max_tokens": 4096, "largest": 4096}
        assert path["sizes"] > 1


def test_0_5_12_text_model_sizes(cc):
    _require("0.5.12")
    path = _resolve_0_5_12(LLAMA)
    assert path["runner"] == "piecewise"
    assert path["max_tokens"] == (8192 if cc == "off" else 4096)  # 8192: H100's chunked-prefill default
    assert path["largest"] == path["max_tokens"]
    user = _resolve_0_5_12(LLAMA, piecewise_cuda_graph_max_tokens=8192)
    assert user["max_tokens"] == 8192  # an explicit choice always wins


@pytest.mark.parametrize("kw", [
    {"enable_lora": True}, {"pp_size": 2}, {"enable_dp_attention": True}, {"disaggregation_mode": "prefill"},
    {"disable_piecewise_cuda_graph": True}, {"enable_deterministic_inference": True},
])
def test_0_5_12_other_exclusions_remain(cc, kw):
    _require("0.5.12")
    assert _resolve_0_5_12(QWEN35, **kw)["runner"] == "eager"


def test_0_5_12_disabled_architecture_remains(cc):
    _require("0.5.12")
    assert _resolve_0_5_12("Qwen3NextForCausalLM")["runner"] == "eager"


def test_0_5_12_revert_restores_upstream():
    _require("0.5.12")
    from sglang.srt.server_args import ServerArgs

    from cc_runtime import runtime

    original = ServerArgs.__dict__["_handle_piecewise_cuda_graph"]
    runtime._reset_for_tests()
    runtime.activate(cc="1")
    assert ServerArgs.__dict__["_handle_piecewise_cuda_graph"] is not original
    runtime._reset_for_tests()
    assert ServerArgs.__dict__["_handle_piecewise_cuda_graph"] is original
    assert _resolve_0_5_12(QWEN35)["runner"] == "eager"


# -- SGLang 0.5.23 ---------------------------------------------------------------------------------
@pytest.fixture
def cuda_box(monkeypatch):
    """Stand-ins for a CUDA machine with an 80 GB H100 (after every SGLang import is done)."""
    _require("0.5.23")
    import sglang.srt.utils as sglang_utils
    from sglang.srt import server_args  # noqa: F401 - everything imported before the stand-ins go in
    from sglang.srt.arg_groups import cuda_graph_hook, memory_hook, resolution_hooks  # noqa: F401
    from sglang.srt.configs import model_config  # noqa: F401

    monkeypatch.setattr(sglang_utils, "is_cuda", lambda: True)
    monkeypatch.setattr(memory_hook, "get_device_memory_capacity", lambda device=None: H100_MEM_MIB)


def _resolve_0_5_23(arch: str, **kw) -> dict:
    from sglang.srt import server_args as sa
    from sglang.srt.arg_groups import cuda_graph_hook, memory_hook
    from sglang.srt.arg_groups.resolution_hooks import run_hook
    from sglang.srt.configs import model_config as mc

    from cc_runtime.patches.sglang_prefill_graphs import prefill_path_0_5_23

    args = sa.ServerArgs(model_path="stand-in/model", **kw)
    args._model_config = SimpleNamespace(
        is_multimodal=mc.is_multimodal_model([arch]),
        is_multimodal_breakable_cuda_graph_supported=mc.is_multimodal_breakable_cuda_graph_supported([arch]),
        hf_config=SimpleNamespace(architectures=[arch]), attention_arch=None, context_len=32768)
    run_hook(cuda_graph_hook.handle_cuda_graph_config, args)
    run_hook(memory_hook.handle_gpu_memory_settings, args)
    return prefill_path_0_5_23(args)


def test_0_5_23_prefill_takes_breakable_graphs_with_cc_sizes(cc, cuda_box):
    for arch in (LLAMA, QWEN35):  # Qwen3.5 is on upstream's multimodal breakable allowlist
        path = _resolve_0_5_23(arch)
        assert path["runner"] == "breakable"
        assert path["max_tokens"] == (8192 if cc == "off" else 4096)
        assert path["largest"] == path["max_tokens"]
    if cc != "off":
        assert _status("sglang.prefill_graphs_0_5_23") == "applied"


def test_0_5_23_pipeline_parallel_opts_in_under_cc(cc, cuda_box):
    path = _resolve_0_5_23(LLAMA, pp_size=2)
    assert path["runner"] == ("disabled" if cc == "off" else "breakable")
    if cc != "off":
        assert path["max_tokens"] == 4096


@pytest.mark.parametrize("arch,kw", [
    ("Qwen2_5_VLForConditionalGeneration", {"pp_size": 2}),  # multimodal, not allowlisted: replay faults
    (LLAMA, {"pp_size": 2, "enable_two_batch_overlap": True}),
    (LLAMA, {"cuda_graph_backend_prefill": "disabled"}),
    (LLAMA, {"pp_size": 2, "cuda_graph_backend_prefill": "disabled"}),
])
def test_0_5_23_exclusions_and_user_choices_remain(cc, cuda_box, arch, kw):
    assert _resolve_0_5_23(arch, **kw)["runner"] == "disabled"


def test_0_5_23_explicit_sizes_win(cc, cuda_box):
    assert _resolve_0_5_23(LLAMA, cuda_graph_max_bs_prefill=8192)["max_tokens"] == 8192


def test_0_5_12_cap_follows_the_setting(monkeypatch):
    _require("0.5.12")
    from cc_runtime import runtime

    runtime._reset_for_tests()
    monkeypatch.setenv("CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS", "2048")
    runtime.activate(cc="1")
    path = _resolve_0_5_12(LLAMA)
    assert (path["max_tokens"], path["largest"]) == (2048, 2048)


def test_0_5_23_cap_follows_the_setting(cuda_box, monkeypatch):
    from cc_runtime import runtime

    runtime._reset_for_tests()
    monkeypatch.setenv("CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS", "2048")
    runtime.activate(cc="1")
    path = _resolve_0_5_23(LLAMA)
    assert (path["runner"], path["max_tokens"], path["largest"]) == ("breakable", 2048, 2048)
