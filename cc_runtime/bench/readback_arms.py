"""The ways ``cc-runtime bench readback`` reads a decode step back: one :class:`Arm` each, in a registry.

An arm says whether CC is on (emulated on a GPU, simulated on CPU), whether it runs cc_runtime's
:class:`~cc_runtime.readback.ReadbackWorker` (``env.worker``), and how it starts one step's readback.
``submit(env, outs)`` returns what :func:`cc_runtime.bench.readback.consume_results` takes: a
``(host_tensors, event)`` pair, or an object with ``.result`` (``None``: nothing read back). A peer
(another engine's readback worker) is added from its own module, named in :data:`PEER_MODULES`, which
calls :func:`register` when imported; ``setup`` opens what it needs on ``env`` for the arm's run, and
``skip`` says why it cannot run here (the arm is then left out of the run, with that reason in the
notes).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The arms the ratios are built from (see :data:`DEFAULT`).
CC_OFF, CC_OFF_RUNTIME, CC_INLINE, CC_RUNTIME = "cc_off", "cc_off_runtime", "cc_inline", "cc_runtime"
#: Not a way to read back: the cc_runtime arm's worker thread with nothing to copy (it waits for each
#: step's readiness event and signals the step, as the real worker does, and nothing else), to measure
#: what one device wait and one hand-off cost a thread on this machine: the floor under any worker.
FLOOR_ARM = "worker_floor"


@dataclass(frozen=True)
class Arm:
    name: str
    cc: bool  # CC emulated / simulated on this arm (False: the device as it is, CC off)
    worker: bool  # runs cc_runtime's ReadbackWorker as env.worker
    submit: Callable[[Any, list[Any]], Any]
    description: str
    setup: Callable[[Any], contextlib.AbstractContextManager[Any]] | None = None
    skip: Callable[[Any], str | None] | None = None  # ctx -> why not here, or None


def _inline(env: Any, outs: list[Any]) -> Any:
    return env.inline_readback(outs)


def _coalesced(env: Any, outs: list[Any]) -> Any:
    return env.worker.submit_coalesced(outs)


def _nothing() -> None:
    """The floor arm's readback: the worker waits for the step, runs this, and signals."""


def _floor(env: Any, outs: list[Any]) -> Any:
    return env.worker.submit(_nothing)


ARMS: dict[str, Arm] = {}
#: Modules that register a peer's arm when imported (loaded by :func:`load_peers`, once).
PEER_MODULES: tuple[str, ...] = ()


def register(arm: Arm, *, default: bool = True) -> Arm:
    """Add an arm (a peer's readback, say); ``default`` puts it in every run where it can run."""
    ARMS[arm.name] = arm
    if default and arm.name not in DEFAULT:
        DEFAULT.append(arm.name)
    return arm


DEFAULT: list[str] = []
register(Arm(CC_OFF, cc=False, worker=False, submit=_inline,
             description="CC off, upstream's readback: a non_blocking copy per output tensor + an event"))
register(Arm(CC_OFF_RUNTIME, cc=False, worker=True, submit=_coalesced,
             description="CC off, cc_runtime's path: the readback worker + one coalesced copy"))
register(Arm(CC_INLINE, cc=True, worker=False, submit=_inline,
             description="CC, upstream's readback: each copy host-synchronous under CC"))
register(Arm(CC_RUNTIME, cc=True, worker=True, submit=_coalesced,
             description="CC, cc_runtime's readback worker + one coalesced copy"))
register(Arm(FLOOR_ARM, cc=True, worker=True, submit=_floor,
             description="CC, the readback worker with nothing to copy (the floor of its CPU)"))


def load_peers() -> list[str]:
    """Import every :data:`PEER_MODULES` entry (each registers its arm); returns why any could not load."""
    problems = []
    for name in PEER_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a broken peer must not take the benchmark down
            problems.append(f"peer arm module {name} not loaded: {type(exc).__name__}: {exc}")
    return problems
