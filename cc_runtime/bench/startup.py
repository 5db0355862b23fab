"""``cc-runtime bench startup``: what cc_runtime costs every Python process start.

SGLang, torch inductor's compile workers and tokenizer pools start many processes, and under CC (or
with ``cc-runtime launch``) each inherits ``CC_RUNTIME_BOOTSTRAP=1``. Arms, interleaved round by round so drift hits all of them alike, each a
fresh ``sys.executable`` process:

* ``python -c pass`` without and with the bootstrap (CC off, with the decision a parent exports, as a
  spawned child sees it): ``bootstrap_added_ms`` is the per-round difference;
* ``import cc_runtime`` timed inside a fresh process (no bootstrap), CC off (this machine's own NVML
  answer, or ``CC_RUNTIME_CC=0`` where CC is on), forced on (``CC_RUNTIME_CC=1``), and CC off with the
  decision a parent exports (what a bootstrapped child imports, timed in-process).

Where the ``.pth`` is not installed in this interpreter's site-packages (editable install), both
``python -c pass`` arms run with the ``cc-runtime launch`` sitecustomize shim instead; the environment
block says which. Wall-clock times on a shared machine: read the spread.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

from .common import BenchContext, BenchResult, spread

DESCRIPTION = "process start-up: bootstrap cost on `python -c pass`, `import cc_runtime` CC off / on"

_IMPORT = ("import time; t0 = time.perf_counter(); import cc_runtime; "
           "print('MS', (time.perf_counter() - t0) * 1e3)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=20, help="processes per arm, interleaved (default 20)")


def _clean_env() -> dict[str, str]:
    import cc_runtime

    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    parent = os.path.dirname(os.path.dirname(os.path.abspath(cc_runtime.__file__)))
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([parent] + ([old] if old else []))
    return env


def _arms() -> tuple[dict[str, tuple[list[str], dict[str, str]]], dict[str, Any]]:
    from ..commands.install_bootstrap import info
    from ..detect import CCState, cc_state, to_decision

    base = _clean_env()
    boot = info()
    via = f".pth in site-packages ({boot['path']})"
    pass_env = dict(base)
    if not boot["installed"]:
        shim = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_launch")
        pass_env["PYTHONPATH"] = os.pathsep.join([shim, pass_env["PYTHONPATH"]])
        via = "cc-runtime launch sitecustomize shim (the .pth is not installed in this interpreter)"
    here = cc_state()
    off_env = dict(base)
    if here.enabled:
        off_env["CC_RUNTIME_CC"] = "0"
        decision = to_decision(CCState(False, "env", "forced off by CC_RUNTIME_CC=0"), "0", "")
    else:
        decision = to_decision(here, "", "")
    boot_env = {**pass_env, **{k: v for k, v in off_env.items() if k.startswith("CC_RUNTIME_")},
                "CC_RUNTIME_BOOTSTRAP": "1", "CC_RUNTIME_DECISION": decision}
    py = sys.executable
    arms = {
        "python -c pass": ([py, "-c", "pass"], pass_env),
        "python -c pass, bootstrap": ([py, "-c", "pass"], boot_env),
        "import cc_runtime, CC off": ([py, "-c", _IMPORT], off_env),
        "import cc_runtime, CC on": ([py, "-c", _IMPORT], {**base, "CC_RUNTIME_CC": "1"}),
        # What the bootstrap imports in a child, timed in-process (far less noisy than process wall time).
        "import cc_runtime, CC off, inherited decision": (
            [py, "-c", _IMPORT], {k: v for k, v in boot_env.items() if k != "CC_RUNTIME_BOOTSTRAP"}),
    }
    facts = {"bootstrap_via": via, "python": py,
             "bytecode_cache": _precompile(),
             "cc_off_by": "CC_RUNTIME_CC=0" if here.enabled else f"{here.source}: {here.reason}"}
    return arms, facts


def _precompile() -> str:
    """Write cc_runtime's .pyc files, as ``pip install`` does for a wheel.

    Without them every process compiles cc_runtime from source, which then dominates the measurement
    (machines and CI images that set PYTHONDONTWRITEBYTECODE never cache them); a deployed install has
    them. compileall writes them whatever that variable says; the processes measured only read them."""
    import compileall

    import cc_runtime

    pkg = os.path.dirname(os.path.abspath(cc_runtime.__file__))
    ok = compileall.compile_dir(pkg, quiet=1)
    boot = os.path.join(os.path.dirname(pkg), "_cc_runtime_bootstrap.py")
    if os.path.isfile(boot):
        import py_compile

        try:
            py_compile.compile(boot, doraise=True)
        except (OSError, py_compile.PyCompileError):
            ok = False
    return "precompiled by the benchmark (as pip does at install)" if ok else \
        "could not write every .pyc (read-only install?): some processes compile from source"


def _once(argv: list[str], env: dict[str, str]) -> tuple[float, float | None]:
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    wall = (time.perf_counter() - t0) * 1e3
    if r.returncode != 0:
        raise RuntimeError(f"{argv[-1]!r} exited {r.returncode}: {r.stderr.strip()[-500:]}")
    inner = [float(ln.split()[1]) for ln in r.stdout.splitlines() if ln.startswith("MS ")]
    return wall, (inner[-1] if inner else None)


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(ctx: BenchContext) -> BenchResult:
    runs = max(3, int(ctx.extra.get("runs") or 20))
    arms, facts = _arms()
    facts["load_average_before"] = _load()
    wall: dict[str, list[float]] = {name: [] for name in arms}
    inner: dict[str, list[float]] = {name: [] for name in arms}
    for argv, env in arms.values():  # warm the file cache and .pyc files; not counted
        _once(argv, env)
    for _ in range(runs):
        for name, (argv, env) in arms.items():
            w, i = _once(argv, env)
            wall[name].append(w)
            if i is not None:
                inner[name].append(i)
    facts["load_average_after"] = _load()
    added = [b - p for b, p in zip(wall["python -c pass, bootstrap"], wall["python -c pass"], strict=True)]
    summary = {
        "bootstrap_added_ms": spread(added),
        "import_ms_cc_off": spread(inner["import cc_runtime, CC off"]),
        "import_ms_cc_on": spread(inner["import cc_runtime, CC on"]),
        "import_ms_cc_off_inherited": spread(inner["import cc_runtime, CC off, inherited decision"]),
        "python_pass_ms": spread(wall["python -c pass"]),
        "python_pass_bootstrap_ms": spread(wall["python -c pass, bootstrap"]),
    }
    rows = []
    for name in arms:
        measured = inner[name] or wall[name]
        s = spread(measured)
        rows.append({"arm": name, "what": "import time in-process" if inner[name] else "process wall time",
                     "median_ms": s["median"], "min_ms": s["min"], "max_ms": s["max"], "n": s["n"]})
    # The targets live in bench/goals.py with the others; `cc-runtime bench` marks them met/MISSED.
    notes = ["bootstrap_added_ms: per-round difference of the two `python -c pass` arms "
             f"(bootstrap via {facts['bootstrap_via']}; .pyc: {facts['bytecode_cache']})"]
    return BenchResult(
        benchmark="startup",
        summary=summary,
        rows=rows,
        columns=["arm", "what", "median_ms", "min_ms", "max_ms", "n"],
        notes=notes,
        environment={**facts, "runs_per_arm": runs, "interleaved": True, "cc": "off (CC on only in its arm, forced)",
                     "device_kind": "host (process start-up, no device work)", "emulator_profile": None},
        title=f"process start-up cost ({runs} interleaved runs per arm, real processes, this machine)",
    )
