"""CC cost profiles: what the emulator charges, each number with its source.

A profile describes what Confidential Computing adds to a GPU's host interface. Sources: the
ISPASS'25 artifact (H100 + Intel TDX, cuda-samples
bandwidthTest and nsys), arXiv 2606.23969 "The Serialized Bridge" (B300, Phala), TensorRT PR 4740
(event timings), NVIDIA R580 CC release notes (host registration). "guess" marks what nobody measured.

Built-ins: ``h100``, ``h200``, ``b200``, ``b300`` (CC on) and ``off`` (CC-off costs, used by the
simulated device when no CC profile is given). Which published hardware figures each one was fit to
is recorded in :mod:`.published` (``cc-runtime bench emulator --against-published`` re-runs them). User profiles are JSON files::

    {"name": "my-h200", "base": "h100", "h2d_bandwidth_Bps": 4.9e9, "d2h_bandwidth_Bps": 4.9e9}

``base`` (default ``h100``) supplies every field the file leaves out; unknown keys are an error.
Stdlib only: imported by the emulation patch module in every process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DIRECTIONS = ("h2d", "d2h", "d2d")


class ProfileError(ValueError):
    """A profile name, file or field that cannot be used; the message says what would work."""


@dataclass(frozen=True)
class Profile:
    """One set of CC costs and semantics. Times in seconds, bandwidths in bytes per second.

    Copy model (host<->device): one copy of ``n`` bytes costs ``fixed + n / bandwidth`` in total, the
    line ``t = t0 + bytes/BW`` that calibrate fits (pinned and pageable host memory have their own
    lines). Under CC a pinned copy is host-synchronous: the issuing thread first waits for all earlier
    work on its stream, then spends the copy's cost. The GPU emulator waits until the real CC-off copy
    plus its wait reaches the modelled total; the simulated device spends the total. Launch, graph
    replay and D2D costs are *extras* on top of the CC-off cost (an emulator can only add to a real
    launch). Semantic switches (``*_blocking``, ``*_serialize_*``, ``*_fails``, ``*_unsupported``)
    name what CC changes where sources disagree or a test must be able to turn it off.
    """

    name: str
    #: True for a CC-on profile (copies host-synchronous, events corrupted); False for a CC-off profile.
    cc: bool = True
    #: Fixed cost of one pinned H2D copy. h100: 21.9 us (ISPASS: 64 B pinned H2D copy; the 4 KiB..64 MiB
    #: fit says t0 40 us, but the small-copy measurement is what the fixed part governs).
    h2d_fixed_s: float = 21.9e-6
    #: Fixed cost of one pinned D2H copy. h100: 19.7 us (ISPASS fit t0).
    d2h_fixed_s: float = 19.7e-6
    #: Pinned H2D bandwidth. h100: 3.04 GB/s (ISPASS fit; 3.03 GB/s measured at 64 MiB).
    h2d_bandwidth_Bps: float = 3.04e9
    #: Pinned D2H bandwidth. h100: 2.96 GB/s (ISPASS fit; 2.98 GB/s measured at 16 MiB).
    d2h_bandwidth_Bps: float = 2.96e9
    #: Fixed cost of one pageable H2D copy. h100: 36.8 us (ISPASS pageable H2D).
    pageable_h2d_fixed_s: float = 36.8e-6
    #: Fixed cost of one pageable D2H copy. h100: 46.9 us (ISPASS pageable D2H).
    pageable_d2h_fixed_s: float = 46.9e-6
    #: Pageable H2D bandwidth. h100: ~2.7 GB/s (ISPASS).
    pageable_h2d_bandwidth_Bps: float = 2.7e9
    #: Pageable D2H bandwidth. h100: ~2.7 GB/s (ISPASS).
    pageable_d2h_bandwidth_Bps: float = 2.7e9
    #: Extra CPU cost per eager kernel launch. h100: +5 us (ISPASS nsys cudaLaunchKernel 4.9 -> 9.9 us).
    launch_extra_s: float = 5e-6
    #: Extra cost per CUDA graph replay, paid once, 0 per node (guess; Phala: long graph 1.0012x).
    graph_replay_extra_s: float = 5e-6
    #: Extra cost per device-to-device copy. h100: +5.2 us (ISPASS small D2D 2.5 -> 7.7 us; nvtrust
    #: issue 42: small D2D ~80% slower under CC).
    d2d_extra_s: float = 5.2e-6
    #: Slow-down of compute-bound kernels (Phala B300 matmul 0.998x -> 1/0.998). Simulated device only.
    compute_scale: float = 1.0
    #: Slow-down of memory-bound kernels (Phala B300 1 GiB memory-bound 0.912x). Simulated device only.
    memory_bound_scale: float = 1.0
    #: Event timing corruption (TensorRT PR 4740, FlashInfer PRs 3638/3870: unreliable, sometimes
    #: negative). No published distribution: every ``event_*`` number is a guess.
    #: Probability that one elapsed_time reading is corrupted at all.
    event_corrupt_prob: float = 0.3
    #: Relative error (standard deviation, as a fraction of the true value) of a corrupted reading.
    event_rel_sigma: float = 0.5
    #: Absolute error (standard deviation, ms) added to a corrupted reading.
    event_abs_sigma_ms: float = 0.02
    #: Probability that a corrupted reading comes back negative.
    event_negative_prob: float = 0.2
    #: Pageable H2D is host-synchronous after draining its stream, like a pinned copy. Sources disagree:
    #: TensorRT-LLM PR 17515 avoids pageable H2D under CC (True, the pessimistic reading, default);
    #: vLLM's CC helper treats it as not host-synchronous (Tinfoil: ``VLLM_CC_PAGEABLE_H2D=1``): False.
    pageable_h2d_blocking: bool = True
    #: Host<->device copies from different streams (and threads) of one context run one at a time
    #: (arXiv 2606.23969). A copy still waits only for its *own* stream's earlier work (vLLM PR 52226).
    copies_serialize_across_streams: bool = True
    #: cudaHostRegister / cuMemHostRegister fail with error 801 (R580 CC notes via vLLM issue 55428;
    #: NCCL likewise, nvtrust issue 57).
    host_register_fails: bool = True
    #: Multicast objects cannot be created: cuMulticastCreate / cuMulticastGetGranularity return
    #: CUDA_ERROR_NOT_SUPPORTED (SGLang issue 30364; vLLM issues 50179, 42324).
    multicast_unsupported: bool = True
    #: ``Tensor.is_pinned()`` reads False for pinned host memory: under CC ``cudaPointerGetAttributes``
    #: reports ``cudaMallocHost`` memory as managed, not host (NVIDIA/TensorRT PR 4740), and torch's
    #: ``CUDAHooks::isPinnedPtr`` returns ``type == cudaMemoryTypeHost``. Reported, not yet confirmed on
    #: CC hardware: off in every built-in profile until it is.
    pinned_reads_unpinned: bool = False
    description: str = ""
    #: Where each number came from (field name -> source), for reports.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    #: Calibrated profiles: where and how they were measured (GPU, driver, CC state, versions, date).
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: Calibrated profiles: each measured value's spread (field -> {median, min, max, n}).
    spread: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: Calibrated profiles: the raw medians (absolute launch/replay/D2D times, copy time by size,
    #: observed blocking), so this profile can serve as a later run's CC-off baseline.
    measurements: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.endswith(("_s", "_ms")) and not (isinstance(v, (int, float)) and v >= 0):
                raise ProfileError(f"profile {self.name!r}: {f.name} must be a number >= 0, got {v!r}")
            if f.name.endswith("_Bps") and not (isinstance(v, (int, float)) and v > 0):
                raise ProfileError(f"profile {self.name!r}: {f.name} must be a number > 0, got {v!r}")
            if f.name.endswith("_prob") and not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise ProfileError(f"profile {self.name!r}: {f.name} must be in [0, 1], got {v!r}")
            if f.name.endswith(("_scale", "_sigma")) and not (isinstance(v, (int, float)) and v >= 0):
                raise ProfileError(f"profile {self.name!r}: {f.name} must be a number >= 0, got {v!r}")
            if f.name in SWITCHES + ("cc",) and not isinstance(v, bool):
                raise ProfileError(f"profile {self.name!r}: {f.name} must be true or false, got {v!r}")

    @property
    def label(self) -> str:
        """``emulated:<name>`` for CC profiles, ``off`` for the CC-off profile (the JSON ``cc`` field)."""
        return f"emulated:{self.name}" if self.cc else "off"

    def copy_cost_s(self, nbytes: int, direction: str, pinned: bool = True) -> float:
        """Seconds one copy of ``nbytes`` costs: ``fixed + nbytes / bandwidth`` (pinned or pageable host
        memory); ``d2d``: the extra per device-to-device copy."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if direction == "h2d":
            if pinned:
                return self.h2d_fixed_s + nbytes / self.h2d_bandwidth_Bps
            return self.pageable_h2d_fixed_s + nbytes / self.pageable_h2d_bandwidth_Bps
        if direction == "d2h":
            if pinned:
                return self.d2h_fixed_s + nbytes / self.d2h_bandwidth_Bps
            return self.pageable_d2h_fixed_s + nbytes / self.pageable_d2h_bandwidth_Bps
        if direction == "d2d":
            return self.d2d_extra_s
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")

    def host_synchronous(self, direction: str, pinned: bool = True) -> bool:
        """Whether a copy blocks its thread until its stream's earlier work and the copy are done."""
        if direction == "d2h":
            return self.cc or not pinned  # pageable D2H is synchronous in CUDA with CC off as well
        if direction == "h2d":
            return self.cc and (pinned or self.pageable_h2d_blocking)
        return False

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sources"] = dict(self.sources)
        d["provenance"] = dict(self.provenance)
        d["spread"] = dict(self.spread)
        d["measurements"] = dict(self.measurements)
        return d


#: The semantic switches (true/false fields), each with its source in the field's comment.
SWITCHES = ("pageable_h2d_blocking", "copies_serialize_across_streams", "host_register_fails",
            "multicast_unsupported", "pinned_reads_unpinned")

_ISPASS = "ISPASS'25 artifact (Elio-yang/hcc-ispass25-artifact), H100 + Intel TDX"
_PHALA = "arXiv 2606.23969 'The Serialized Bridge' (B300, Phala)"
_EVENT_GUESS = "guess: no published distribution (TensorRT PR 4740: unreliable, negative values seen)"
_SWITCH_SOURCES = {
    "pageable_h2d_blocking": "sources disagree: TensorRT-LLM PR 17515 avoids pageable H2D under CC (true, the "
                             "pessimistic default); vLLM's CC helper / Tinfoil VLLM_CC_PAGEABLE_H2D=1 say not "
                             "host-synchronous (false)",
    "copies_serialize_across_streams": f"{_PHALA}: copies serialise across streams within one context; vLLM PR "
                                       "52226: a copy on an idle side stream pays only its own cost",
    "host_register_fails": "NVIDIA R580 CC release notes via vLLM issue 55428 (error 801); NCCL: nvtrust issue 57",
    "multicast_unsupported": "SGLang issue 30364 (cuMulticastGetGranularity preflight fails); vLLM issues "
                             "50179, 42324",
    "pinned_reads_unpinned": "reported, not confirmed on hardware (off until it is): NVIDIA/TensorRT PR 4740 "
                             "(cudaPointerGetAttributes reports cudaMallocHost memory as managed under CC); "
                             "torch CUDAHooks::isPinnedPtr compares the type with cudaMemoryTypeHost",
}

#: CC-off costs of an H100 host link (ISPASS CC-off: 64 B H2D 2.1 us, fit t0 1.9 us, 43 GB/s; small D2D 2.5 us).
OFF = Profile(
    name="off", cc=False, h2d_fixed_s=2.1e-6, d2h_fixed_s=1.9e-6, h2d_bandwidth_Bps=43e9,
    d2h_bandwidth_Bps=39e9, pageable_h2d_fixed_s=8.7e-6, pageable_d2h_fixed_s=12.1e-6,
    pageable_h2d_bandwidth_Bps=10.5e9, pageable_d2h_bandwidth_Bps=12.8e9, launch_extra_s=0.0,
    graph_replay_extra_s=0.0, d2d_extra_s=2.5e-6, event_corrupt_prob=0.0, event_negative_prob=0.0,
    pageable_h2d_blocking=False, copies_serialize_across_streams=False, host_register_fails=False,
    multicast_unsupported=False,
    description="CC off: H100 PCIe costs without CC (simulated device baseline)",
    sources={"h2d_fixed_s": f"{_ISPASS}: CC-off 64 B pinned H2D 2.1 us", "d2h_fixed_s": f"{_ISPASS}: CC-off fit t0 1.9 us",
             "h2d_bandwidth_Bps": f"{_ISPASS}: 43.0 GB/s", "d2h_bandwidth_Bps": f"{_ISPASS}: ~39 GB/s at 16 MiB",
             "pageable_*": f"{_ISPASS}: pageable H2D/D2H 8.7/12.1 us, 10.5/12.8 GB/s",
             "d2d_extra_s": f"{_ISPASS}: small D2D copy 2.5 us (the CC-off D2D cost itself, used by the "
                            "simulated device as its D2D base)",
             "switches": "CUDA semantics with CC off"},
)

H100 = Profile(
    name="h100",
    description="H100 + Intel TDX, CC on (ISPASS'25 measurements)",
    sources={
        "h2d_fixed_s": f"{_ISPASS}: 64 B pinned H2D copy 21.9 us (fit t0 over 4 KiB..64 MiB: 40 us)",
        "d2h_fixed_s": f"{_ISPASS}: fit t0 19.7 us",
        "h2d_bandwidth_Bps": f"{_ISPASS}: fit 3.04 GB/s (3.03 GB/s pinned at 64 MiB)",
        "d2h_bandwidth_Bps": f"{_ISPASS}: fit 2.96 GB/s (2.98 GB/s at 16 MiB)",
        "pageable_h2d_fixed_s": f"{_ISPASS}: pageable H2D 36.8 us",
        "pageable_d2h_fixed_s": f"{_ISPASS}: pageable D2H 46.9 us",
        "pageable_h2d_bandwidth_Bps": f"{_ISPASS}: pageable ~2.7 GB/s",
        "pageable_d2h_bandwidth_Bps": f"{_ISPASS}: pageable ~2.7 GB/s",
        "launch_extra_s": f"{_ISPASS}: nsys cudaLaunchKernel median 4.9 -> 9.9 us",
        "graph_replay_extra_s": f"guess; {_PHALA}: long graph 1.0012x",
        "d2d_extra_s": f"{_ISPASS}: small D2D 2.5 -> 7.7 us; nvtrust issue 42: ~80% slower",
        "event_*": _EVENT_GUESS,
        **_SWITCH_SOURCES,
    },
)

# B300: only ratios were published (H2D 0.203x, D2H 0.211x of CC-off). The CC-off base bandwidth is
# a guess (55 GB/s, a PCIe Gen6 x16 link): replace it with a calibrated profile.
_B300_OFF_BW_GUESS = 55e9
B300 = Profile(
    name="b300",
    h2d_fixed_s=330e-6,
    pageable_h2d_fixed_s=330e-6,
    h2d_bandwidth_Bps=0.203 * _B300_OFF_BW_GUESS,
    d2h_bandwidth_Bps=0.211 * _B300_OFF_BW_GUESS,
    pageable_h2d_bandwidth_Bps=0.203 * _B300_OFF_BW_GUESS * 2.7 / 3.04,
    pageable_d2h_bandwidth_Bps=0.211 * _B300_OFF_BW_GUESS * 2.7 / 2.96,
    compute_scale=1 / 0.998,
    memory_bound_scale=1 / 0.912,
    description="B300, CC on (Phala: ratios and the ~330 us small crossing; CC-off bandwidth guessed at 55 GB/s)",
    sources={
        "h2d_fixed_s": f"{_PHALA}: small crossings pay a fixed setup toll of ~330 us per call (a small "
                       "allocate-and-copy; the allocation is part of it, so this is an upper bound on the copy's "
                       "own fixed cost)",
        "d2h_fixed_s": "guess (H100's 19.7 us)",
        "h2d_bandwidth_Bps": f"{_PHALA}: 0.203x of CC-off; CC-off 55 GB/s is a guess",
        "d2h_bandwidth_Bps": f"{_PHALA}: 0.211x of CC-off; CC-off 55 GB/s is a guess",
        "pageable_h2d_fixed_s": "no figure; at least h2d_fixed_s (330 us): a pageable copy is staged through a "
                                "pinned buffer, then crosses as a pinned copy does (H100's 36.8 us, used before, "
                                "made a pageable crossing 9x cheaper than a pinned one)",
        "pageable_d2h_fixed_s": "guess (H100's 46.9 us)",
        "pageable_h2d_bandwidth_Bps": "guess: pinned B300 bandwidth x the H100 pageable/pinned ratio (2.7/3.04)",
        "pageable_d2h_bandwidth_Bps": "guess: pinned B300 bandwidth x the H100 pageable/pinned ratio (2.7/2.96)",
        "launch_extra_s": "guess (+5 us, as H100)",
        "graph_replay_extra_s": f"guess; {_PHALA}: long graph 1.0012x",
        "d2d_extra_s": "unknown; guess: H100 value",
        "compute_scale": f"{_PHALA}: matmul 0.998x",
        "memory_bound_scale": f"{_PHALA}: 1 GiB memory-bound test 0.912x",
        "event_*": _EVENT_GUESS,
        **_SWITCH_SOURCES,
    },
)

_B200 = ("arXiv 2608.26575 v2 'Benchmarking Confidential Computing Performance on NVIDIA Blackwell GPUs' (8x "
         "B200 + Intel TDX), as reported by a detailed secondary account (the paper's text was not available)")
# B200: H2D only was published; D2H, pageable and graph costs are guesses from the H100 profile.
B200 = dataclasses.replace(
    H100,
    name="b200",
    h2d_fixed_s=4.5e-6,
    h2d_bandwidth_Bps=9.6e9,
    d2h_fixed_s=4.5e-6,
    d2h_bandwidth_Bps=9.6e9,
    pageable_h2d_bandwidth_Bps=9.6e9 * 2.7 / 3.04,
    pageable_d2h_bandwidth_Bps=9.6e9 * 2.7 / 2.96,
    launch_extra_s=12.25e-6,
    description="B200 + Intel TDX, CC on (arXiv 2608.26575: H2D setup, bulk bandwidth, launch cost)",
    sources={
        **H100.sources,
        "h2d_fixed_s": f"{_B200}: transfers of 64 KB or less dominated by a fixed ~3-6 us (midpoint)",
        "h2d_bandwidth_Bps": f"{_B200}: 9.4-9.6 GB/s at 16 and 64 MB",
        "d2h_fixed_s": "guess: the B200 H2D figure (no D2H figure published)",
        "d2h_bandwidth_Bps": "guess: the B200 H2D figure (no D2H figure published)",
        "pageable_h2d_fixed_s": "guess (H100's 36.8 us)",
        "pageable_d2h_fixed_s": "guess (H100's 46.9 us)",
        "pageable_h2d_bandwidth_Bps": "guess: B200 pinned bandwidth x the H100 pageable/pinned ratio (2.7/3.04)",
        "pageable_d2h_bandwidth_Bps": "guess: B200 pinned bandwidth x the H100 pageable/pinned ratio (2.7/2.96)",
        "launch_extra_s": f"{_B200}: kernel submission 3.45 us CC off, 15.7 us CC on",
        "graph_replay_extra_s": "guess (H100's)",
        "d2d_extra_s": "guess (H100's)",
    },
)

_VLLM_55428 = "vLLM issue 55428 (8x H200, Intel TDX on 2x Xeon 8558, CC on)"
# H200: the Hopper link of the H100 profile, with the one bandwidth measured on an H200 in TDX.
H200 = dataclasses.replace(
    H100,
    name="h200",
    h2d_bandwidth_Bps=4.9 * 2**30,
    d2h_bandwidth_Bps=4.9 * 2**30,
    description="H200 + Intel TDX, CC on (vLLM issue 55428: cudaHostAlloc copies ~4.9 GiB/s; the rest H100's)",
    sources={
        **H100.sources,
        "h2d_bandwidth_Bps": f"{_VLLM_55428}: cudaHostAlloc memory copies at ~4.9 GiB/s through the bounce buffer "
                             "(direction not stated: used for both)",
        "d2h_bandwidth_Bps": f"{_VLLM_55428}: ~4.9 GiB/s (direction not stated: used for both)",
    },
)

BUILTIN: dict[str, Profile] = {p.name: p for p in (H100, H200, B200, B300, OFF)}
_FIELDS = {f.name for f in dataclasses.fields(Profile)}
#: Fields that describe a profile rather than set a cost (accepted in JSON, never compared).
_METADATA = ("sources", "provenance", "spread", "measurements")


def profile_names() -> list[str]:
    return sorted(BUILTIN)


def load_profile(spec: str | os.PathLike[str] | Profile | None) -> Profile:
    """A built-in profile by name (``h100``, ``b300``, ``off``; case-insensitive), a JSON file path,
    or a Profile (returned as is). ``None`` means ``off``. Raises ProfileError naming what is valid."""
    if spec is None:
        return OFF
    if isinstance(spec, Profile):
        return spec
    text = os.fspath(spec).strip()
    if text.lower() in BUILTIN:
        return BUILTIN[text.lower()]
    if text.lower().endswith(".json") or os.path.sep in text or os.path.exists(text):
        return _load_json(text)
    raise ProfileError(f"unknown CC emulator profile {text!r}; valid: {', '.join(profile_names())}, "
                       "or a path to a JSON profile file")


def _load_json(path: str) -> Profile:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ProfileError(f"CC emulator profile file {path!r} does not exist; built-in profiles: "
                           f"{', '.join(profile_names())}") from None
    except (OSError, ValueError) as exc:
        raise ProfileError(f"CC emulator profile file {path!r} is not readable JSON: {exc}") from None
    return profile_from_dict(data, origin=path)


def profile_from_dict(data: Any, origin: str = "<dict>") -> Profile:
    if not isinstance(data, dict):
        raise ProfileError(f"{origin}: a profile must be a JSON object, got {type(data).__name__}")
    data = dict(data)
    base_name = str(data.pop("base", "h100")).lower()
    if base_name not in BUILTIN:
        raise ProfileError(f"{origin}: base {base_name!r} is not a built-in profile; valid: "
                           f"{', '.join(profile_names())}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        valid = sorted(_FIELDS - set(_METADATA)) + ["base"]
        raise ProfileError(f"{origin}: unknown profile field(s) {unknown}; valid fields: {', '.join(valid)}")
    data.setdefault("name", os.path.splitext(os.path.basename(origin))[0] if origin != "<dict>" else "custom")
    sources = dict(BUILTIN[base_name].sources)
    for key in data:
        if key not in ("name", "description", *_METADATA):
            sources[key] = f"user profile {origin}"
    user_sources = data.pop("sources", {}) or {}
    if not isinstance(user_sources, dict):
        raise ProfileError(f"{origin}: sources must be an object (field name -> source text)")
    sources.update(user_sources)
    for key in ("provenance", "spread", "measurements"):
        if not isinstance(data.get(key, {}), dict):
            raise ProfileError(f"{origin}: {key} must be an object")
    for key, value in data.items():  # JSON allows Infinity and NaN; a user profile must be finite
        if isinstance(value, float) and not math.isfinite(value):
            raise ProfileError(f"{origin}: {key} must be a finite number, got {value!r}")
    try:
        return dataclasses.replace(BUILTIN[base_name], sources=sources, **data)
    except TypeError as exc:
        raise ProfileError(f"{origin}: {exc}") from None
