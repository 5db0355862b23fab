"""Issue-13 patches on a real CUDA GPU (``pytest -m gpu``; skipped without one). No stand-ins here.

* HiCache host pools: ``sglang_hicache.pinned_host_tensor`` allocates through cuda-python's
  ``cudaHostAlloc`` (what the patch uses under CC), the memory is pinned, and pages move to and from a
  device pool byte-exactly; under the CC emulator ``cudaHostRegister`` fails with 801 while this works.
* Snapshot readback: a CUDA graph whose replay rewrites its static output buffers; the snapshot taken
  right behind one replay keeps that replay's values although the next replay is queued before the
  read.
"""

from __future__ import annotations

import gc
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.timeout(120)
def test_hicache_host_pool_from_cuda_host_alloc_moves_pages_exactly() -> None:
    pytest.importorskip("cuda.bindings.runtime")
    from cc_runtime.emulator import cuda as ec
    from cc_runtime.patches import sglang_hicache

    layers, tokens, heads, dim = 3, 1024, 4, 64
    host = sglang_hicache.pinned_host_tensor((2, layers, tokens, heads, dim), torch.float16)
    assert host.is_pinned() and host.shape == (2, layers, tokens, heads, dim)
    assert sglang_hicache.is_ours(host)
    device = torch.randn(2, layers, 256, heads, dim, device="cuda", dtype=torch.float16)
    dev_idx = torch.arange(32, 96, device="cuda")
    host_idx = torch.arange(512, 576)
    with ec.emulate("h100"):
        probe = torch.empty(4096, dtype=torch.uint8)
        assert int(torch.cuda.cudart().cudaHostRegister(probe.data_ptr(), probe.numel(), 0)) == 801
        # What the direct IO backend does: indexed rows, per layer, through torch copies.
        for kv in range(2):
            for layer in range(layers):
                host[kv, layer].index_copy_(0, host_idx, device[kv, layer].index_select(0, dev_idx).cpu())
        back = torch.zeros_like(device)
        for kv in range(2):
            for layer in range(layers):
                back[kv, layer].index_copy_(0, dev_idx, host[kv, layer].index_select(0, host_idx).to("cuda"))
    torch.cuda.synchronize()
    assert torch.equal(back[:, :, 32:96], device[:, :, 32:96])
    ptr = host.data_ptr()
    del host
    gc.collect()
    assert not sglang_hicache.is_ours(SimpleNamespace(data_ptr=lambda: ptr))  # freed with its last view


@pytest.mark.timeout(120)
def test_snapshot_survives_the_next_graph_replay() -> None:
    from cc_runtime.patches import sglang_readback_snapshot as snap

    static_in = torch.zeros(8, 64, device="cuda")
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm up outside capture
            hidden_out = static_in * 2.0
            accept_out = (static_in[:, 0] + 1).to(torch.int32)
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        hidden_out = static_in * 2.0
        accept_out = (static_in[:, 0] + 1).to(torch.int32)

    static_in.fill_(1.0)
    graph.replay()  # forward N
    result = SimpleNamespace(logits_output=SimpleNamespace(hidden_states=hidden_out), accept_lens=accept_out)
    assert snap.snapshot(result, hidden=True, holders=False) == 2
    assert result.logits_output.hidden_states.data_ptr() != hidden_out.data_ptr()
    static_in.fill_(5.0)
    graph.replay()  # replay N+1 rewrites the graph's output buffers; the reads below are queued after it
    host_hidden = result.logits_output.hidden_states.to("cpu")
    host_accept = result.accept_lens.to("cpu")
    torch.cuda.synchronize()
    assert torch.equal(hidden_out.cpu(), torch.full((8, 64), 10.0))  # the replay did happen
    assert torch.equal(host_hidden, torch.full((8, 64), 2.0))
    assert torch.equal(host_accept, torch.full((8,), 2, dtype=torch.int32))
