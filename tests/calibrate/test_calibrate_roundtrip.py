"""``cc-runtime calibrate`` on the simulated device, and the round trip through ``bench emulator --against``.

No stand-ins: the real CLI, the real SimDevice (the CPU's simulated GPU; every number here is
simulated), the real emulation patch. Tolerances are loose because two CPU cores are shared: what
is asserted is that calibrate *recovers* the profile the simulated device plays (and would not
recover a different one), not how fast anything is.
"""

from __future__ import annotations

import json
import platform

import pytest

from cc_runtime import cli
from cc_runtime.calibrate import compare
from cc_runtime.emulator import load_profile

H100 = load_profile("h100")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "P.json"
    assert cli.main(["calibrate", "--device", "cpu", "--quick", "--out", str(out)]) == 0
    return out


@pytest.mark.timeout(120)
def test_calibrate_recovers_the_simulated_profile(calibrated) -> None:
    p = json.loads(calibrated.read_text())
    assert p["provenance"]["simulated"] is True and p["provenance"]["device_kind"] == "simulated"
    assert p["provenance"]["simulated_profile"] == "h100" and p["cc"] is True
    for f in ("h2d_bandwidth_Bps", "d2h_bandwidth_Bps", "pageable_h2d_bandwidth_Bps", "pageable_d2h_bandwidth_Bps"):
        assert p[f] == pytest.approx(getattr(H100, f), rel=0.15), f
    for f in ("h2d_fixed_s", "d2h_fixed_s", "pageable_h2d_fixed_s", "pageable_d2h_fixed_s"):
        assert p[f] == pytest.approx(getattr(H100, f), rel=0.35), f
    for f in ("launch_extra_s", "graph_replay_extra_s", "d2d_extra_s"):  # extras over the same-run CC-off device
        assert p[f] == pytest.approx(getattr(H100, f), abs=3e-6), f
    for f in ("pageable_h2d_blocking", "copies_serialize_across_streams", "host_register_fails",
              "multicast_unsupported"):
        assert p[f] is getattr(H100, f), f
    assert 0 < p["event_corrupt_prob"] < 0.6 and p["event_negative_prob"] > 0
    for f in ("h2d_fixed_s", "h2d_bandwidth_Bps", "launch_extra_s"):
        s = p["spread"][f]
        assert s["min"] <= s["median"] <= s["max"] and s["n"] >= 3
    assert all(f in p["sources"] for f in ("h2d_fixed_s", "launch_extra_s", "event_*", "pageable_h2d_blocking"))


def test_calibrated_profile_loads_as_is_and_through_the_environment(calibrated, monkeypatch) -> None:
    import cc_runtime
    from cc_runtime.emulator import SimDevice
    from cc_runtime.emulator import cuda as ec
    from cc_runtime.patches import emulation

    prof = load_profile(str(calibrated))
    assert prof.name == "calibrated-sim-h100" and prof.cc and prof.provenance["plan"] == "quick"
    # The torch hooks need CUDA; on CPU the patch module's test hook supplies the stand-in backend.
    sim = SimDevice(None)
    monkeypatch.setenv("CC_RUNTIME_EMULATE", str(calibrated))
    monkeypatch.setattr(emulation, "BACKEND_FOR_TESTS", ec.StandInBackend(sim.Stream()))
    try:
        cc_runtime.activate(patches="emulation")
        em = ec.active()
        assert em is not None and em.profile == prof
    finally:
        cc_runtime.deactivate()
        sim.shutdown()


def test_the_profile_names_no_machine(calibrated) -> None:
    text = calibrated.read_text()
    host = platform.node()
    if len(host) >= 4:
        assert host not in text
    assert str(calibrated.parent) not in text
    forbidden = {"host", "hostname", "node", "serial", "serial_number", "uuid", "gpu_uuid", "pci", "pci_bus_id",
                 "bus_id", "user", "username", "path", "cwd", "home"}
    keys = {k.lower() for k in _all_keys(json.loads(text))}
    assert not keys & forbidden, keys & forbidden


def _all_keys(obj) -> set[str]:
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.add(str(k))
            out |= _all_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= _all_keys(v)
    return out


@pytest.mark.timeout(180)
def test_bench_against_the_calibrated_profile_is_imposition(calibrated, tmp_path) -> None:
    """A profile calibrated on the simulated device, played back by the simulated device: imposition, not a
    comparison with other hardware (that key is kept for profiles calibrated on real CC hardware)."""
    out = tmp_path / "R.json"
    assert cli.main(["bench", "emulator", "--device", "cpu", "--quick", "--against", str(calibrated),
                     "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["environment"]["device_kind"] == "simulated" and r["environment"]["against"] == "calibrated-sim-h100"
    assert r["environment"]["comparison"] == "imposition" and "max_rel_error_vs_profile" not in r["summary"]
    assert any(n.startswith("imposition:") and "calibrated on the simulated device" in n for n in r["notes"])
    err = r["summary"]["simulated_imposition_max_rel_error"]
    errors = sorted(row["rel_error"] for row in r["rows"] if row["in_max"])
    assert errors[-1] == err
    assert errors[len(errors) // 2] < 0.15, errors  # the median: one copy can meet a noisy neighbour
    switches = {row["parameter"]: row["rel_error"] for row in r["rows"] if isinstance(row["profile"], bool)}
    assert switches == dict.fromkeys(("pageable_h2d_blocking", "copies_serialize_across_streams",
                                      "host_register_fails", "multicast_unsupported"), 0.0)


def test_only_a_profile_from_real_cc_hardware_is_compared_as_other_hardware(calibrated) -> None:
    import dataclasses

    from cc_runtime.bench.emulator import measured_on_cc_hardware

    simulated = load_profile(str(calibrated))
    assert not measured_on_cc_hardware(simulated) and not measured_on_cc_hardware(H100)
    real = dataclasses.replace(H100, provenance={"simulated": False, "device_kind": "cuda", "cc_state": "on",
                                                 "cc_devtools": False, "gpu": "NVIDIA H100"})
    assert measured_on_cc_hardware(real)
    for state in ("off", "emulated:h100", "disabled"):
        assert not measured_on_cc_hardware(dataclasses.replace(real, provenance={**real.provenance, "cc_state": state}))
    assert not measured_on_cc_hardware(dataclasses.replace(real, provenance={**real.provenance, "cc_devtools": True}))


def test_a_different_profile_is_not_recovered(calibrated) -> None:
    """What calibrate measured on the device playing h100 is near h100 and far from b300: both sides can
    fail (near fails when the simulated device stops imposing h100's costs, or calibrate stops measuring
    them; far fails when the comparison stops telling profiles apart)."""
    p = json.loads(calibrated.read_text())
    meas = {"copies": {k: {int(n): [t] for n, t in per.items()}
                       for k, per in p["measurements"]["copy_s_by_size"].items()}}
    near_rows, _ = compare(p, H100, meas)
    far_rows, far_max = compare(p, load_profile("b300"), meas)

    def median_error(rows) -> float:
        errors = sorted(r["rel_error"] for r in rows if r["in_max"])
        return errors[len(errors) // 2]

    assert median_error(near_rows) < 0.1 and median_error(far_rows) > 0.5 and far_max > 1.0


def test_bad_inputs_get_one_message(calibrated, tmp_path, capsys) -> None:
    assert cli.main(["calibrate", "--device", "tpu", "--out", str(tmp_path / "x.json")]) == 2
    assert "use cuda, cuda:N or cpu" in capsys.readouterr().err
    # A CC-on profile cannot be a CC-off baseline.
    assert cli.main(["calibrate", "--device", "cpu", "--quick", "--baseline", str(calibrated),
                     "--out", str(tmp_path / "y.json")]) == 2
    assert "CC-off run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "emulator", "--device", "cpu", "--against", str(tmp_path / "missing.json")])
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "y.json").exists()


def test_profiles_are_checked_as_cc_runtime_emulate_is(tmp_path, capsys) -> None:
    """``calibrate --emulate`` and ``bench emulator --against`` take what CC_RUNTIME_EMULATE takes, through
    the settings registry: a CC-off profile is refused with one message (a "fidelity" against a profile
    with nothing to emulate would be a number that means nothing), and the spelling is normalised."""
    with pytest.raises(SystemExit):
        cli.main(["bench", "emulator", "--device", "cpu", "--quick", "--against", "off"])
    assert "--against" in capsys.readouterr().err
    assert cli.main(["calibrate", "--device", "cpu", "--quick", "--emulate", "off",
                     "--out", str(tmp_path / "off.json")]) == 2
    assert "--emulate needs a CC profile" in capsys.readouterr().err
    assert not (tmp_path / "off.json").exists()
    from cc_runtime.bench.emulator import _profile_arg

    assert _profile_arg(" H100 ") == "h100"


@pytest.mark.timeout(180)
def test_each_extra_is_recovered_from_its_own_measurement(tmp_path) -> None:
    """h100's launch, graph-replay and D2D extras are all ~5 us, so a D2D extra derived from the launch
    timings would pass the round trip above: a profile with three far-apart extras tells them apart.
    (All under 20 us: the emulator's clock spins for those; longer waits yield the GIL to the simulated
    device's threads and overshoot on a loaded 2-core machine.)"""
    from cc_runtime.calibrate import calibrate

    spec = tmp_path / "apart.json"
    spec.write_text(json.dumps({"name": "apart", "base": "h100", "launch_extra_s": 2e-6,
                                "graph_replay_extra_s": 10e-6, "d2d_extra_s": 18e-6}))
    p = calibrate("cpu", quick=True, sim_profile=str(spec))
    assert p["launch_extra_s"] == pytest.approx(2e-6, abs=3e-6)
    assert p["graph_replay_extra_s"] == pytest.approx(10e-6, abs=3e-6)
    assert p["d2d_extra_s"] == pytest.approx(18e-6, abs=3e-6)
