"""``cc-runtime bench load`` on the simulated device: the result format issue 23 asks for, crossings within
their bound, and a loader that hands over wrong bytes caught by the byte comparison. Real: the bench, the
generated checkpoints, ``cc_runtime.loading`` and the simulated device; SGLang is not imported in this
session, so the upstream arm is the plain-torch stand-in the bench names in its rows."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from cc_runtime import cli  # noqa: E402
from cc_runtime.bench.load import scaled_chunk  # noqa: E402

pytestmark = pytest.mark.timeout(240)

_ARGS = ["bench", "load", "--device", "cpu", "--quick", "--size-gb", "0.012"]


def _run(tmp_path, *extra: str) -> dict:
    out = tmp_path / "load.json"
    assert cli.main([*_ARGS, *extra, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_quick_load_reports_the_issue_keys_per_shape(tmp_path) -> None:
    r = _run(tmp_path)
    s = r["summary"]
    for key in ("load_s", "h2d_crossings", "effective_gbps", "consume_floor_s"):
        assert set(s[key]) == {"dense", "moe"}, key
    assert {"efficiency_vs_bound", "speedup_vs_upstream_cc", "bytes_identical"} <= set(s)
    assert s["bytes_identical"] is True and s["mismatched_tensors"] == 0
    for shape in ("dense", "moe"):
        assert 0 < s["h2d_crossings"][shape] <= s["h2d_crossing_bound"][shape]
    assert {(row["shape"], row["arm"]) for row in r["rows"]} >= {("dense", "cc_runtime"), ("moe", "cc_runtime"),
                                                              ("dense", "upstream"), ("moe", "upstream")}
    # The upstream arm crosses once per tensor; the chunked loader far fewer times.
    rows = {(row["shape"], row["cc"], row["arm"]): row for row in r["rows"]}
    tensors = r["environment"]["checkpoints"]["moe"]["tensors"]
    assert rows[("moe", "h100", "upstream")]["h2d_crossings"] == tensors > 10 * s["h2d_crossings"]["moe"]
    assert r["model"]["bound_s"]["source"].startswith("bytes / profile")


def test_a_loader_handing_over_wrong_bytes_is_caught(tmp_path, monkeypatch) -> None:
    """Deliberately broken: every device-to-device copy out of the chunk flips the first byte."""
    from cc_runtime.loading.transport import SimTransport

    real = SimTransport.d2d

    def corrupting(self, dst, src):
        real(self, dst, src)
        if dst.numel():
            dst.view(-1)[0] ^= 0xFF

    monkeypatch.setattr(SimTransport, "d2d", corrupting)
    s = _run(tmp_path, "--shapes", "dense")["summary"]
    assert s["bytes_identical"] is False and s["mismatched_tensors"] > 0


def test_the_chunk_scales_with_the_checkpoint_but_not_below_1_mib() -> None:
    assert scaled_chunk(128 << 20, 1.0) == 128 << 20
    assert scaled_chunk(128 << 20, 0.05) == int((128 << 20) * 0.05) >> 10 << 10
    assert scaled_chunk(128 << 20, 0.001) == 1 << 20
