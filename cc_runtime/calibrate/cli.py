"""``cc-runtime calibrate --out PROFILE.json [--device cuda:N|cpu] [--quick] [--baseline OFF.json]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

HELP = "measure a CC profile on this machine (or the simulated device) and write it as JSON"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser("calibrate", help=HELP, description=HELP + (
        ". The JSON loads as is with CC_RUNTIME_EMULATE=PROFILE.json. It holds the GPU model, driver, CC state "
        "and versions, never a hostname, serial number, UUID or path."))
    p.add_argument("--out", required=True, metavar="PROFILE.json", help="where to write the profile")
    p.add_argument("--device", default=None, help="cuda, cuda:N, or cpu (the simulated device); default: cuda "
                                                  "when present")
    p.add_argument("--quick", action="store_true", help="fewer sizes and repetitions (under 3 minutes on a GPU)")
    p.add_argument("--emulate", default="h100", metavar="PROFILE",
                   help="cpu only: the profile the simulated device plays (default h100)")
    p.add_argument("--baseline", metavar="OFF.json",
                   help="a calibrate JSON from the same kind of GPU with CC off: turns launch, graph replay and "
                        "D2D times into CC extras")
    p.add_argument("--name", default=None, help="the profile's name (default: calibrated[-sim-PROFILE])")
    p.add_argument("--seed", type=int, default=0)
    return p


def _baseline(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    meas = data.get("measurements") if isinstance(data, dict) else None
    if not isinstance(meas, dict) or "launch_s" not in meas:
        raise ValueError(f"{path} has no calibrate measurements (launch_s ...): give a file written by "
                         "cc-runtime calibrate")
    if data.get("cc", True):
        raise ValueError(f"{path} was measured with CC on; a baseline must be a CC-off run")
    return meas


def main(args: argparse.Namespace) -> int:
    from ..bench.common import default_device
    from ..emulator.profiles import load_profile
    from ..settings import VARS, SettingsError
    from . import calibrate

    device = args.device or default_device()
    if device != "cpu" and not device.startswith("cuda"):
        print(f"cc-runtime calibrate: --device {device}: use cuda, cuda:N or cpu", file=sys.stderr)
        return 2
    try:  # --emulate is checked as CC_RUNTIME_EMULATE is, in the settings registry
        emulate = VARS["CC_RUNTIME_EMULATE"].parse("--emulate", args.emulate)
        if emulate is None:
            raise ValueError("--emulate needs a CC profile for the simulated device (h100 | b300 | "
                             "/path/profile.json); its CC-off baseline is measured in the same run")
        baseline = _baseline(args.baseline)
    except (SettingsError, ValueError, OSError) as exc:
        print(f"cc-runtime calibrate: {exc}", file=sys.stderr)
        return 2
    if device != "cpu":
        try:
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("CUDA is not available")
        except Exception as exc:  # noqa: BLE001 - one clear message instead of a traceback
            print(f"cc-runtime calibrate: --device {device}: {exc}; --device cpu calibrates the simulated "
                  "device", file=sys.stderr)
            return 2
    profile = calibrate(device, quick=args.quick, sim_profile=emulate, baseline=baseline, name=args.name,
                        seed=args.seed, progress=_progress)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(profile, f, indent=2)
        f.write("\n")
    load_profile(args.out)  # what we wrote must load as is
    _print(profile, args.out)
    return 0


def _progress(items: Any, desc: str) -> Any:
    """tqdm on a terminal; one line per step otherwise (a piped or logged run is not left silent)."""
    from ..bench.common import progress

    if sys.stderr.isatty():
        yield from progress(items, desc)
        return
    for item in items:
        print(f"{desc}: {item[0]} ...", file=sys.stderr, flush=True)
        yield item


def _print(profile: dict[str, Any], path: str) -> None:
    from ..bench.common import format_table

    prov = profile["provenance"]
    label = "SIMULATED device" if prov.get("simulated") else prov.get("gpu", "cuda")
    rows = []
    for field in ("h2d_fixed_s", "d2h_fixed_s", "pageable_h2d_fixed_s", "pageable_d2h_fixed_s", "launch_extra_s",
                  "graph_replay_extra_s", "d2d_extra_s"):
        s = profile["spread"].get(field)
        rows.append({"parameter": field.replace("_s", "_us"), "value": profile[field] * 1e6,
                     "min": s["min"] * 1e6 if s else float("nan"), "max": s["max"] * 1e6 if s else float("nan")})
    for field in ("h2d_bandwidth_Bps", "d2h_bandwidth_Bps", "pageable_h2d_bandwidth_Bps", "pageable_d2h_bandwidth_Bps"):
        s = profile["spread"][field]
        rows.append({"parameter": field.replace("_Bps", "_GBps"), "value": profile[field] / 1e9,
                     "min": s["min"] / 1e9, "max": s["max"] / 1e9})
    print(format_table(rows, ["parameter", "value", "min", "max"],
                       f"cc-runtime calibrate: {label}, CC state {prov.get('cc_state')} (median, min, max over "
                       "repetitions; nan: not derived, see sources)"))
    switches = ", ".join(f"{k}={profile[k]}" for k in ("pageable_h2d_blocking", "copies_serialize_across_streams",
                                                       "host_register_fails", "multicast_unsupported"))
    print(f"semantics: {switches}")
    print(f"event timings: {profile['event_corrupt_prob']:.0%} of readings invalid, "
          f"{profile['event_negative_prob']:.0%} of those negative")
    print(f"wrote {path} (load it with CC_RUNTIME_EMULATE={path})")
