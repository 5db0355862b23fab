"""The sweep's arms: CC off, CC without cc_runtime (upstream behaviour), CC with cc_runtime.

Each arm is nothing but CC_RUNTIME_* settings for the server's environment (all defined in
:mod:`cc_runtime.settings`, validated here the same way the runtime validates them):

============== ===================================== ==============================================
arm            on a CC machine                       on a machine without CC, with ``--emulate P``
============== ===================================== ==============================================
cc-off         cannot run (CC is a VM setting)        ``CC_RUNTIME_DISABLE=1`` (nothing emulated)
cc             ``CC_RUNTIME_DISABLE=1``               ``CC_RUNTIME_EMULATE=P``,
                                                      ``CC_RUNTIME_PATCHES=emulation,sglang.cc_env,
                                                      flashinfer.cc_env``
cc+cc_runtime  ``CC_RUNTIME_PATCHES=*``               ``CC_RUNTIME_EMULATE=P``, ``CC_RUNTIME_PATCHES=*``
               (or ``--patches``)                     (or ``--patches``)
============== ===================================== ==============================================

"Emulated CC without cc_runtime's fixes" is the emulator patch alone plus the two patches that only
tell SGLang and FlashInfer that CC is on (``sglang.cc_env``, ``flashinfer.cc_env``): on a real CC
machine upstream detects CC through NVML by itself and takes its own CC paths (SGLang 0.5.23's async
D2H worker and pageable staging), so the emulated baseline must take them too, or it would measure a
CC that upstream never runs. Every fix of cc_runtime's own (readback worker, prefill graphs, timers) is
off in that arm. The cc+cc_runtime arm applies every patch (``*``, or ``--patches``) whatever the caller's
environment says, so the comparison is "all fixes" against "none". Opt-in patches (experimental) apply
only when named exactly, so ``*`` leaves them out; ``--patches`` can name them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .. import settings

ARM_NAMES: tuple[str, ...] = ("cc-off", "cc", "cc+cc_runtime")
BASELINE = "cc-off"
#: What the emulated ``cc`` arm allows: the emulator and upstream's own CC switches, no cc_runtime fix.
UPSTREAM_CC_PATCHES = "emulation,sglang.cc_env,flashinfer.cc_env"
#: The settings an arm decides; the caller's values of these never leak into an arm.
ARM_VARS = ("CC_RUNTIME_DISABLE", "CC_RUNTIME_EMULATE", "CC_RUNTIME_PATCHES", "CC_RUNTIME_CC",
            "CC_RUNTIME_BOOTSTRAP")


class ArmError(ValueError):
    """The requested arms cannot be planned (unknown name, bad profile, emulation under real CC)."""


@dataclass(frozen=True)
class ArmPlan:
    name: str
    #: ``off``, ``on`` or ``emulated:<profile>``: the CC state this arm's server runs under.
    cc: str
    #: CC_RUNTIME_* values this arm sets in the server's environment.
    env: Mapping[str, str] = field(default_factory=dict)
    #: Why this arm cannot run here (None: it runs).
    skip_reason: str | None = None

    @property
    def emulated(self) -> bool:
        return self.cc.startswith("emulated")

    @property
    def title(self) -> str:
        """The arm's column heading: says 'emulated' whenever it is."""
        if self.name == "cc-off":
            return "CC off"
        kind = f"emulated CC ({self.cc.split(':', 1)[1]})" if self.emulated else "CC on"
        return kind if self.name == "cc" else f"{kind} + cc_runtime"


def parse_arms(text: str) -> list[str]:
    names = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in names if a not in ARM_NAMES]
    if unknown or not names:
        raise ArmError(f"unknown arm(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(ARM_NAMES)}")
    return list(dict.fromkeys(names))


def plan_arms(names: Sequence[str], *, emulate: str | None, real_cc: bool, real_reason: str = "",
              patches: str = "*") -> list[ArmPlan]:
    """Settings for each arm on this machine. ``real_cc`` is the hardware's state (NVML), not a setting.
    ``patches`` is the cc+cc_runtime arm's CC_RUNTIME_PATCHES: ``*`` applies every patch except the opt-in
    ones, which apply only when named (list them with prefixes, e.g. ``sglang.*,...,<opt-in name>``)."""
    allowed = settings.Settings.load(env={"CC_RUNTIME_PATCHES": patches})
    if emulate and not allowed.patch_allowed("emulation"):
        raise ArmError(f"--patches {patches!r} leaves out 'emulation': the cc+cc_runtime arm would not be emulated")
    label = None
    if emulate:
        if real_cc:
            raise ArmError(f"--emulate {emulate}: real CC is on here ({real_reason}); emulating on top of it "
                           "would count every cost twice. Drop --emulate to measure real CC.")
        from ..emulator.profiles import ProfileError, load_profile

        try:
            label = f"emulated:{load_profile(emulate).name}"
        except ProfileError as exc:
            raise ArmError(str(exc)) from None
        settings.get("CC_RUNTIME_EMULATE", emulate)  # the same validation the server will apply
    plans = []
    for name in names:
        if name == "cc-off":
            if real_cc:
                plans.append(ArmPlan(name, "off", skip_reason=(
                    f"this machine runs with CC on ({real_reason}); CC is a VM setting, so the CC-off arm "
                    "must run on a CC-off machine: merge both runs with `cc-runtime sweep report A.jsonl "
                    "B.jsonl`")))
            else:
                plans.append(ArmPlan(name, "off", {"CC_RUNTIME_DISABLE": "1"}))
            continue
        arm_patches = UPSTREAM_CC_PATCHES if name == "cc" else patches
        if real_cc:
            env = {"CC_RUNTIME_DISABLE": "1"} if name == "cc" else {"CC_RUNTIME_PATCHES": patches}
            plans.append(ArmPlan(name, "on", env))
        elif label is not None:
            assert emulate is not None
            plans.append(ArmPlan(name, label, {"CC_RUNTIME_EMULATE": emulate, "CC_RUNTIME_PATCHES": arm_patches}))
        else:
            plans.append(ArmPlan(name, "on", skip_reason=(
                "CC is off on this machine and no --emulate PROFILE was given (e.g. --emulate h100 for "
                "emulated CC; real CC needs a CC machine)")))
    return plans


def server_environment(base: Mapping[str, str], plan: ArmPlan) -> dict[str, str]:
    """``base`` with the arm's settings in place of the caller's, validated, plus what ``cc-runtime
    launch`` adds so every Python child of the server (schedulers, detokenizer) activates cc_runtime."""
    from ..cli import launch_env

    env = {k: v for k, v in base.items() if k not in ARM_VARS}
    env.update(plan.env)
    settings.Settings.load(env=env)  # SettingsError names a bad variable before any server starts
    return launch_env(env)


def client_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The benchmark client measures; it must never be emulated or patched itself."""
    env = {k: v for k, v in base.items() if k not in ARM_VARS}
    env["CC_RUNTIME_DISABLE"] = "1"
    return env
