"""cc_runtime.loading on CPU: plain CPU tensors and the emulator's simulated device (which counts copies)."""

from __future__ import annotations

import math
import os
import struct

import pytest
import torch

from cc_runtime.emulator import SimDevice
from cc_runtime.loading import CheckpointError, ChunkedLoader, load_file, read_header
from cc_runtime.loading.transport import CpuTransport, SimTransport

from .checkpoints import make_checkpoint, same_bytes

CHUNKS = (997, 4096, 1 << 20)  # an odd size splits tensors across chunks; 1 MiB holds a whole file


@pytest.mark.parametrize("group_below", [0, 1 << 20])
@pytest.mark.parametrize("kind", ["dense", "moe"])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_every_tensor_byte_identical_on_cpu(tmp_path, kind: str, chunk: int, group_below: int) -> None:
    want = make_checkpoint(str(tmp_path), kind)
    got = load_file(str(tmp_path), "cpu", chunk_bytes=chunk, group_below=group_below)
    assert set(got) == set(want)
    for name, t in want.items():
        assert same_bytes(got[name], t), name


@pytest.mark.parametrize("profile", [None, "h100"])
def test_simulated_device_counts_one_crossing_per_chunk(tmp_path, profile: str | None) -> None:
    want = make_checkpoint(str(tmp_path), "moe", files=4)
    with SimDevice(profile) as sim:
        loader = ChunkedLoader(str(tmp_path), SimTransport(sim), chunk_bytes=4096)
        got = {}
        for name, t in loader:
            assert sim.is_device(t)
            got[name] = t.clone()
        sim.synchronize()
        nbytes = loader.nbytes
        assert sim.stats["copies_h2d"] == len(loader.plan.chunks)
        assert sim.stats["copies_h2d"] <= math.ceil(nbytes / 4096) + 4
        assert sim.stats["bytes_h2d"] == nbytes
    for name, t in want.items():
        assert same_bytes(got[name], t), name


@pytest.mark.parametrize("group_below", [0, 1 << 20])
def test_handed_out_tensors_are_owned_never_reused(tmp_path, group_below: int) -> None:
    """Poison every tensor as soon as it is handed out: later tensors must still be exact, and no two
    handed-out tensors overlap in memory (a reused staging buffer would show up in both ways). Without
    grouping every tensor has a storage of its own."""
    want = make_checkpoint(str(tmp_path), "moe")
    kept: dict[str, torch.Tensor] = {}
    spans: list[tuple[int, int]] = []
    storages = set()
    for name, t in ChunkedLoader(str(tmp_path), "cpu", chunk_bytes=4096, group_below=group_below):
        assert same_bytes(t, want[name]), name
        if t.numel():
            a = t.data_ptr()
            b = a + t.numel() * t.element_size()
            assert all(b <= x or a >= y for x, y in spans), name
            spans.append((a, b))
            storages.add(t.untyped_storage().data_ptr())
        kept[name] = t
        t.view(torch.uint8).fill_(0xA5)  # the caller scribbles on what it was given
    assert len(kept) == len(want)
    if group_below == 0:
        assert len(storages) == len(spans)
    else:
        assert len(storages) < len(spans)  # small tensors were grouped


def test_rows_reads_only_the_kept_rows(tmp_path) -> None:
    want = make_checkpoint(str(tmp_path), "dense", files=1)
    name = "model.layers.1.mlp.gate_up_proj.weight"
    tr = CpuTransport()
    got = dict(ChunkedLoader(str(tmp_path), tr, names=[name], rows={name: (40, 200)}, chunk_bytes=1 << 20))
    assert same_bytes(got[name], want[name][40:200])
    assert tr.stats["bytes_h2d"] == want[name][40:200].numel() * 2


def test_tensor_parallel_row_range_outside_the_shape_is_an_error(tmp_path) -> None:
    make_checkpoint(str(tmp_path), "dense", files=1)
    with pytest.raises(CheckpointError, match="rows"):
        ChunkedLoader(str(tmp_path), "cpu", rows={"model.norm.weight": (0, 65)})


def _first_file(folder) -> str:
    return os.path.join(folder, "model-00001-of-00003.safetensors")


def test_truncated_file_fails_before_anything_is_handed_out(tmp_path) -> None:
    make_checkpoint(str(tmp_path), "dense")
    path = _first_file(tmp_path)
    ix = read_header(path)
    last = ix.tensors[-1]
    with open(path, "r+b") as f:
        f.truncate(last.end - 3)
    with pytest.raises(CheckpointError) as err:
        ChunkedLoader(str(tmp_path), "cpu")
    assert path in str(err.value) and repr(last.name) in str(err.value) and "truncated" in str(err.value)


def test_corrupt_header_names_the_file(tmp_path) -> None:
    make_checkpoint(str(tmp_path), "dense")
    path = _first_file(tmp_path)
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(b"{not json")
    with pytest.raises(CheckpointError, match="corrupt header") as err:
        ChunkedLoader(str(tmp_path), "cpu")
    assert err.value.path == path
    with open(path, "r+b") as f:
        f.write(struct.pack("<Q", 1 << 40))
    with pytest.raises(CheckpointError, match="header length"):
        read_header(path)


def test_missing_shard_names_the_shard_and_a_tensor(tmp_path) -> None:
    make_checkpoint(str(tmp_path), "dense")
    path = os.path.join(tmp_path, "model-00002-of-00003.safetensors")
    os.remove(path)
    with pytest.raises(CheckpointError, match="missing shard") as err:
        ChunkedLoader(str(tmp_path), "cpu")
    assert err.value.path == path and err.value.tensor


def test_file_shrinking_during_the_load_raises_at_its_tensor(tmp_path) -> None:
    """Headers were fine when checked; the file is cut afterwards: the read fails, and the iterator
    raises where the first tensor of that chunk would be handed out, naming file and tensor."""
    want = make_checkpoint(str(tmp_path), "dense", files=1)
    path = os.path.join(tmp_path, "model-00001-of-00001.safetensors")
    loader = ChunkedLoader(str(tmp_path), "cpu", chunk_bytes=8192)
    victim = loader.plan.chunks[-2]
    cut = victim.reads[0][0] + 10
    with open(path, "r+b") as f:
        f.truncate(cut)
    names = []
    with pytest.raises(CheckpointError, match="truncated") as err:
        for name, t in loader:
            assert same_bytes(t, want[name])
            names.append(name)
    assert err.value.path == path
    assert err.value.tensor == loader.plan.wanted[victim.pieces[0].key].name
    assert err.value.tensor not in names


class FailingTransport(CpuTransport):
    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    def h2d(self, dst, src, after=None):
        if self.stats["h2d"] == self.fail_at:
            raise RuntimeError("simulated copy failure")
        return super().h2d(dst, src, after)


def test_failed_chunk_copy_raises_where_its_tensor_is_consumed(tmp_path) -> None:
    make_checkpoint(str(tmp_path), "moe", files=2)
    tr = FailingTransport(fail_at=3)
    loader = ChunkedLoader(str(tmp_path), tr, chunk_bytes=4096)
    chunk = loader.plan.chunks[3]
    expected = loader.plan.wanted[chunk.pieces[0].key].name
    handed = []
    with pytest.raises(CheckpointError, match="simulated copy failure") as err:
        for name, _t in loader:
            handed.append(name)
    assert err.value.tensor == expected and expected not in handed


def test_leaving_early_stops_the_threads(tmp_path) -> None:
    import threading

    make_checkpoint(str(tmp_path), "moe")
    it = iter(ChunkedLoader(str(tmp_path), "cpu", chunk_bytes=997))
    next(it)
    it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("cc_runtime-load-")]


def test_chunk_setting_is_validated(monkeypatch) -> None:
    from cc_runtime.loading import chunk_bytes_setting
    from cc_runtime.settings import SettingsError

    monkeypatch.setenv("CC_RUNTIME_LOAD_CHUNK_MB", "64")
    assert chunk_bytes_setting() == 64 << 20
    monkeypatch.setenv("CC_RUNTIME_LOAD_CHUNK_MB", "0")
    with pytest.raises(SettingsError, match="CC_RUNTIME_LOAD_CHUNK_MB"):
        chunk_bytes_setting()
    assert chunk_bytes_setting(256) == 256 << 20


def test_misaligned_tensors_in_a_group_get_buffers_of_their_own(tmp_path) -> None:
    """A 3-byte tensor before an f32 one puts the f32 at an odd file offset: a group view there would
    be misaligned, so those tensors are copied into buffers of their own (and still byte-identical)."""
    from cc_runtime.loading.writer import write_safetensors

    want = {"a": torch.arange(3, dtype=torch.uint8), "b": torch.randn(5), "c": torch.randn(2).bfloat16()}
    path = os.path.join(tmp_path, "m.safetensors")
    write_safetensors(path, want)
    assert read_header(path).tensors[1].begin % 4  # the f32 really lies misaligned in the file
    got = dict(ChunkedLoader(path, "cpu"))
    for name, t in want.items():
        assert same_bytes(got[name], t), name


@pytest.mark.parametrize("chunk", CHUNKS)
def test_rows_in_place_hands_out_the_full_shape_rows_at_their_offset(tmp_path, chunk: int) -> None:
    """Only the rows cross, they land at their own rows of a full-shaped tensor, every other byte is the
    poison (never the file's bytes, never stale memory), and whole tensors are untouched."""
    from cc_runtime.loading.loader import POISON

    want = make_checkpoint(str(tmp_path), "dense", files=2)
    rows = {"model.layers.1.mlp.gate_up_proj.weight": (160, 320), "model.embed_tokens.weight": (0, 48),
            "model.layers.0.self_attn.qkv.weight": (64, 129), "model.norm.weight": (5, 5)}
    whole = ChunkedLoader(str(tmp_path), CpuTransport(), chunk_bytes=chunk)
    tr = CpuTransport()
    loader = ChunkedLoader(str(tmp_path), tr, rows=rows, rows_in_place=True, chunk_bytes=chunk)
    got = dict(loader)
    assert set(got) == set(want)
    for name, t in want.items():
        g = got[name]
        assert g.dtype == t.dtype and tuple(g.shape) == tuple(t.shape), name
        if name not in rows:
            assert same_bytes(g, t), name
            continue
        a, b = rows[name]
        assert same_bytes(g[a:b], t[a:b]), name
        outside = torch.cat([g[:a].reshape(-1), g[b:].reshape(-1)]).view(torch.uint8)
        assert outside.numel() and bool((outside == POISON).all()), name
    row_bytes = {n: want[n].numel() * want[n].element_size() // want[n].shape[0] for n in rows}
    saved = sum((want[n].shape[0] - (b - a)) * row_bytes[n] for n, (a, b) in rows.items())
    assert loader.nbytes == whole.nbytes - saved
    assert tr.stats["bytes_h2d"] == loader.nbytes  # the poisoned rows never crossed
    assert tr.stats["h2d"] == len(loader.plan.chunks) <= loader.plan.crossing_bound()


def test_rows_in_place_on_the_simulated_device_moves_fewer_bytes(tmp_path) -> None:
    want = make_checkpoint(str(tmp_path), "dense", files=1)
    name = "model.layers.2.mlp.gate_up_proj.weight"
    full = want[name].numel() * want[name].element_size()
    with SimDevice("h100") as sim:
        loader = ChunkedLoader(str(tmp_path), SimTransport(sim), rows={name: (0, 160)}, rows_in_place=True,
                               chunk_bytes=4096)
        got = {n: t.clone() for n, t in loader}
        sim.synchronize()
        assert sim.stats["bytes_h2d"] == loader.nbytes == sum(
            t.numel() * t.element_size() for t in want.values()) - full // 2
    assert same_bytes(got[name][:160], want[name][:160])
    assert bool((got[name][160:].view(torch.uint8) == 0xA5).all())
    for n, t in want.items():
        if n != name:
            assert same_bytes(got[n], t), n
