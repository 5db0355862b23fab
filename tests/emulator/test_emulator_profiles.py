"""Profiles: built-ins carry their sources, user JSON overrides a base, bad input names what is valid."""

from __future__ import annotations

import json

import pytest

from cc_runtime.emulator import OFF, Profile, ProfileError, load_profile, profile_names


def test_builtins_match_the_facts_table() -> None:
    h100 = load_profile("h100")
    # ISPASS'25 artifact (H100 + TDX): 64 B pinned H2D 21.9 us, D2H fit t0 19.7 us, fit 3.04 / 2.96 GB/s,
    # pageable 36.8 / 46.9 us at ~2.7 GB/s, small D2D 2.5 -> 7.7 us, launch 4.9 -> 9.9 us.
    assert (h100.h2d_fixed_s, h100.d2h_fixed_s) == (21.9e-6, 19.7e-6)
    assert (h100.h2d_bandwidth_Bps, h100.d2h_bandwidth_Bps) == (3.04e9, 2.96e9)
    assert (h100.pageable_h2d_fixed_s, h100.pageable_d2h_fixed_s) == (36.8e-6, 46.9e-6)
    assert h100.launch_extra_s == 5e-6 and h100.d2d_extra_s == pytest.approx(5.2e-6) and h100.host_register_fails
    assert h100.pageable_h2d_blocking and h100.copies_serialize_across_streams and h100.multicast_unsupported
    b300 = load_profile("B300")  # names are case-insensitive
    assert b300.memory_bound_scale == pytest.approx(1 / 0.912)
    assert set(profile_names()) == {"h100", "h200", "b200", "b300", "off"}
    # Published figures they were fit to: B300's ~330 us small crossing (arXiv 2606.23969), B200's setup,
    # bulk bandwidth and launch cost (arXiv 2608.26575), H200's cudaHostAlloc copies (vLLM issue 55428).
    assert b300.h2d_fixed_s == 330e-6 and "2606.23969" in b300.sources["h2d_fixed_s"]
    b200, h200 = load_profile("b200"), load_profile("h200")
    assert (b200.h2d_fixed_s, b200.h2d_bandwidth_Bps, b200.launch_extra_s) == (4.5e-6, 9.6e9, 12.25e-6)
    assert all("2608.26575" in b200.sources[f] for f in ("h2d_fixed_s", "h2d_bandwidth_Bps", "launch_extra_s"))
    assert h200.h2d_bandwidth_Bps == 4.9 * 2**30 and "55428" in h200.sources["h2d_bandwidth_Bps"]
    for p in (h100, b300, b200, h200):
        assert not p.pinned_reads_unpinned and "reported" in p.sources["pinned_reads_unpinned"]
    for p in (h100, b300, b200, h200):
        assert p.cc and p.label == f"emulated:{p.name}"
        for key in ("h2d_fixed_s", "h2d_bandwidth_Bps", "pageable_h2d_fixed_s", "launch_extra_s",
                    "graph_replay_extra_s", "d2d_extra_s", "event_*", "pageable_h2d_blocking",
                    "copies_serialize_across_streams", "host_register_fails", "multicast_unsupported"):
            assert key in p.sources, f"{p.name}.{key} has no documented source"
    # What nobody measured says so.
    assert "guess" in b300.sources["d2h_fixed_s"] and "guess" in b300.sources["h2d_bandwidth_Bps"]
    assert "guess" in h100.sources["graph_replay_extra_s"]


def test_off_profile_and_none() -> None:
    assert load_profile(None) is OFF and load_profile("off") is OFF
    assert not OFF.cc and OFF.label == "off" and not OFF.host_register_fails
    assert not (OFF.pageable_h2d_blocking or OFF.copies_serialize_across_streams or OFF.multicast_unsupported)


def test_copy_cost_model() -> None:
    p = load_profile("h100")
    assert p.copy_cost_s(0, "h2d") == pytest.approx(21.9e-6)
    assert p.copy_cost_s(3_040_000_000, "h2d") == pytest.approx(1.0 + 21.9e-6)
    assert p.copy_cost_s(2_960_000, "d2h") == pytest.approx(1e-3 + 19.7e-6)
    assert p.copy_cost_s(2_700_000, "h2d", pinned=False) == pytest.approx(1e-3 + 36.8e-6)
    assert p.copy_cost_s(2_700_000, "d2h", pinned=False) == pytest.approx(1e-3 + 46.9e-6)
    assert p.copy_cost_s(123, "d2d") == p.d2d_extra_s
    with pytest.raises(ValueError, match="direction"):
        p.copy_cost_s(1, "sideways")
    with pytest.raises(ValueError):
        p.copy_cost_s(-1, "h2d")


def test_user_json_profile_overrides_base(tmp_path) -> None:
    path = tmp_path / "h200.json"
    path.write_text(json.dumps({"base": "h100", "h2d_bandwidth_Bps": 4.9e9, "launch_extra_s": 0}))
    p = load_profile(str(path))
    assert p.name == "h200" and p.h2d_bandwidth_Bps == 4.9e9 and p.launch_extra_s == 0
    assert p.d2h_bandwidth_Bps == 2.96e9  # from the base
    assert "user profile" in p.sources["h2d_bandwidth_Bps"]
    assert load_profile(p) is p


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"h2d_bandwith_Bps": 1e9}', "unknown profile field"),
        ('{"base": "a100"}', "not a built-in profile"),
        ('{"h2d_bandwidth_Bps": 0}', "must be a number > 0"),
        ('{"event_negative_prob": 1.5}', r"must be in \[0, 1\]"),
        ('{"h2d_fixed_s": "20us"}', "must be a number >= 0"),
        ('{"pageable_h2d_blocking": "yes"}', "must be true or false"),
        ("[1, 2]", "must be a JSON object"),
        ('{"sources": 5}', "sources must be an object"),
        ("{not json", "not readable JSON"),
    ],
)
def test_bad_json_profiles_say_what_is_wrong(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ProfileError, match=message):
        load_profile(str(path))


def test_unknown_name_lists_valid_names(tmp_path) -> None:
    with pytest.raises(ProfileError, match="valid: b200, b300, h100, h200, off"):
        load_profile("a100")
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(str(tmp_path / "missing.json"))


def test_profile_is_frozen() -> None:
    with pytest.raises(AttributeError):
        load_profile("h100").h2d_fixed_s = 0  # type: ignore[misc]
    with pytest.raises(ProfileError):
        Profile(name="x", h2d_fixed_s=-1)


def test_host_synchronous_follows_the_switches() -> None:
    import dataclasses

    h100 = load_profile("h100")
    assert h100.host_synchronous("h2d") and h100.host_synchronous("d2h", pinned=False)
    assert h100.host_synchronous("h2d", pinned=False)
    lenient = dataclasses.replace(h100, pageable_h2d_blocking=False)
    assert not lenient.host_synchronous("h2d", pinned=False) and lenient.host_synchronous("h2d")
    assert not OFF.host_synchronous("h2d") and not OFF.host_synchronous("d2h")
    assert OFF.host_synchronous("d2h", pinned=False)  # pageable D2H is synchronous in CUDA with CC off


def test_calibration_metadata_is_accepted_and_kept(tmp_path) -> None:
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"base": "h100", "provenance": {"gpu": "NVIDIA H200"},
                                "spread": {"h2d_fixed_s": {"median": 1e-5, "min": 9e-6, "max": 2e-5, "n": 5}}}))
    p = load_profile(str(path))
    assert p.provenance["gpu"] == "NVIDIA H200" and p.spread["h2d_fixed_s"]["n"] == 5
    assert p == load_profile("h100").__class__(**{**load_profile("h100").as_dict(), "name": "cal"})


def test_a_pageable_copy_never_costs_less_than_a_pinned_one() -> None:
    """A pageable copy is staged through a pinned buffer and then crosses as a pinned copy does, so every
    built-in profile's pageable line is at or above its pinned line (a cheaper pageable line made
    per-tensor pageable loads look faster than pinned chunks under B300)."""
    for name in ("off", "h100", "h200", "b200", "b300"):
        p = load_profile(name)
        assert p.pageable_h2d_fixed_s >= p.h2d_fixed_s and p.pageable_d2h_fixed_s >= p.d2h_fixed_s, name
        assert p.pageable_h2d_bandwidth_Bps <= p.h2d_bandwidth_Bps, name
        assert p.pageable_d2h_bandwidth_Bps <= p.d2h_bandwidth_Bps, name
