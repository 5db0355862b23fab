"""Every tensor any op of SGLang's real builder chain reads is what the unpatched run read (poison on).

The chain, the stand-ins and the cases are those of ``test_staging_sglang_step_upstream.py`` (SGLang
0.5.12 and 0.5.23, their own ``Req``, pools, allocator, cache, ``FutureMap``; stand-ins only for the
model runner, the model config, the parallel groups and, in one case, the Triton launch). Here a
recording ``TorchFunctionMode`` sits *under* the patch's deferred scope: it sees each op after the scope
has handled it, and copies the bytes of every tensor the op receives (anywhere in its arguments) without
going through any hook, as a kernel would read them. Upstream's own ``torch.empty`` buffers are zeroed
in both runs, so the parts of them nobody wrote read the same. With ``CC_RUNTIME_STAGING_VERIFY=1`` a placeholder
read before its flush holds the poison pattern, so the two runs' reads differ.

Not compared: views (they read no bytes; a view of a placeholder stays pending), the copies themselves (``.to`` / ``torch.tensor``: they read host memory, which the patch
reads at the call; ``test_staging_safety.py`` covers that), metadata reads, and cc_runtime's own staging
work (marked with ``readers.quiet()``).
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import cc_runtime  # noqa: E402
from cc_runtime import runtime  # noqa: E402
from cc_runtime.staging import readers  # noqa: E402

step_mod = importlib.import_module("test_staging_sglang_step_upstream")
sg, sim = step_mod.sg, step_mod.sim  # fixtures

pytestmark = [pytest.mark.upstream, pytest.mark.timeout(300)]


WRITE_ONLY = {"__setitem__", "copy_", "fill_", "zero_", "index_put_", "scatter_"}


class Reads:
    """Each op's name and a raw copy of every tensor it receives, in call order."""

    def __init__(self) -> None:
        from torch.overrides import TorchFunctionMode

        pending_cls, meta, views = readers.rules()
        skip = {torch.Tensor.to, torch._C.TensorBase.to, torch.tensor, *views}  # views read no bytes
        log: list[tuple[str, list[Any]]] = []
        empties = {torch.empty, torch.empty_like, torch.empty_strided, torch.Tensor.new_empty}

        def grab(t: Any) -> Any:
            with torch._C.DisableTorchFunction():  # a kernel's read: no hook, no flush
                return t.detach().clone()

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func not in skip and func not in meta and not getattr(readers._tls, "quiet", 0) \
                        and not getattr(func, "__name__", "") == "__get__":
                    name = getattr(func, "__name__", "")
                    # A destination that is only written (its old bytes may be uninitialised) is not a read.
                    read_args = args[1:] if name in WRITE_ONLY and args else args
                    read_kwargs = {k: v for k, v in kwargs.items() if k != "out"}
                    seen = [grab(t) for t in _tensors_in((read_args, read_kwargs))]
                    if seen:
                        log.append((getattr(func, "__name__", str(func)), seen))
                out = func(*args, **kwargs)
                if func in empties and isinstance(out, torch.Tensor) and not getattr(readers._tls, "quiet", 0):
                    with torch._C.DisableTorchFunction():
                        out.zero_()  # upstream's uninitialised buffers read the same in both runs
                return out

        self.log, self.mode = log, Mode()
        self.pending_cls = pending_cls


def _tensors_in(obj: Any, depth: int = 0) -> list[Any]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if depth > 4:
        return []
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors_in(o, depth + 1)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors_in(o, depth + 1)]
    return []


def _reads(sg_ns: Any, sim_dev: Any | None, case: dict[str, bool], finish: Any) -> list[tuple[str, list[Any]]]:
    runtime._reset_for_tests()
    if sim_dev is not None:
        from cc_runtime.patches import sglang_staging

        cc_runtime.activate(cc="1")
        rec = runtime.manager().records[step_mod.PATCH_FOR[sg_ns.version]]
        assert rec.status == "applied", (rec.status, rec.reason)
        sglang_staging.bind("cpu", sim_dev)
    reads = Reads()
    with reads.mode:
        step = step_mod.Step(sg_ns, **case)  # its pools' empty buffers are zeroed too
        step.prefill()
        if finish == "mixed":
            step.mixed()
        else:
            step.decode(finish=finish)
    runtime._reset_for_tests()
    return reads.log


def _same(want: list[tuple[str, list[Any]]], got: list[tuple[str, list[Any]]]) -> None:
    import difflib

    names_w, names_g = [n for n, _ in want], [n for n, _ in got]
    assert names_g == names_w, "the patched chain ran other ops:\n" + "\n".join(
        difflib.unified_diff(names_w, names_g, "upstream", "patched", lineterm="", n=2))
    for i, ((name, w), (_, g)) in enumerate(zip(want, got, strict=True)):
        assert len(w) == len(g), (i, name)
        for k, (a, b) in enumerate(zip(w, g, strict=True)):
            assert (a.dtype, a.shape) == (b.dtype, b.shape) and torch.equal(a, b), \
                f"op #{i} {name} argument {k} read {b.tolist()} where upstream read {a.tolist()}"


@pytest.mark.parametrize("finish", [None, 1, "mixed"], ids=["decode", "decode_after_finish", "mixed"])
@pytest.mark.parametrize("case", list(step_mod.CASES))
def test_every_read_of_the_builder_chain_matches_the_unpatched_run(sg, sim, case, finish, monkeypatch):
    monkeypatch.setenv("CC_RUNTIME_STAGING_VERIFY", "1")
    _reads(sg, None, step_mod.CASES[case], finish)  # warm-up: first runs import modules that run ops
    want = _reads(sg, None, step_mod.CASES[case], finish)
    got = _reads(sg, sim, step_mod.CASES[case], finish)
    assert len(want) > 20  # the chain really ran ops on its inputs
    _same(want, got)


def test_every_read_with_a_triton_allocation_launch_matches(sg, sim, monkeypatch):
    """The Triton path's launch reads the builder's pending inputs mid-builder (stand-in launcher)."""
    monkeypatch.setenv("CC_RUNTIME_STAGING_VERIFY", "1")
    module = importlib.import_module("sglang.srt.mem_cache." + ("allocation" if sg.version == "0.5.23" else "common"))
    monkeypatch.setattr(module, "support_triton", lambda backend: True)
    monkeypatch.setattr(module, "write_req_to_token_pool_triton", step_mod.TritonWriteStandIn())
    _reads(sg, None, step_mod.CASES["moe_ep"], None)  # warm-up
    want = _reads(sg, None, step_mod.CASES["moe_ep"], None)
    got = _reads(sg, sim, step_mod.CASES["moe_ep"], None)
    _same(want, got)
