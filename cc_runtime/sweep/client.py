"""SGLang's own benchmark client, run once per cell in its own process.

``sglang.benchmark.serving`` on new releases (0.5.23 ships it; ``sglang.bench_serving`` is a deprecated
alias there) and ``sglang.bench_serving`` on old ones (0.5.12). Both take the same flags for what the
sweep needs, including ``--dataset-name random-ids``; a client without ``random-ids`` can only do
fixed-length prompts with ``--dataset-name random --dataset-path <local ShareGPT JSON>`` (pass those via
``--client-arg``). The client appends one JSON line per run to ``--output-file``; that line, unchanged,
is the cell's measurement. The client counts only streamed chunks that carry text, so the server must
not run with ``--skip-tokenizer-init``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .grid import Cell

NEW_MODULE = "sglang.benchmark.serving"
OLD_MODULE = "sglang.bench_serving"

_PROBE = """
import importlib.metadata, importlib.util, json
out = {"sglang": None, "module": None}
try:
    out["sglang"] = importlib.metadata.version("sglang")
except Exception:
    pass
for name in ("sglang.benchmark.serving", "sglang.bench_serving"):
    try:
        if importlib.util.find_spec(name) is not None:
            out["module"] = name
            break
    except Exception:
        pass
print(json.dumps(out))
"""


@dataclass(frozen=True)
class ClientInfo:
    module: str
    sglang_version: str | None
    note: str = ""


def detect_client(python: str = sys.executable, timeout_s: float = 60.0) -> ClientInfo:
    """Which benchmark module ``python`` has (without importing it: find_spec only)."""
    try:
        r = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s,
                           env={**os.environ, "CC_RUNTIME_DISABLE": "1"})
        data = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else {}
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        data = {"error": f"{type(exc).__name__}: {exc}"}
    if data.get("module"):
        return ClientInfo(data["module"], data.get("sglang"))
    return ClientInfo(NEW_MODULE, data.get("sglang"),
                      note=f"sglang's benchmark client is not importable by {python}; shown with {NEW_MODULE} "
                           f"(old releases: {OLD_MODULE})")


def client_argv(python: str, module: str, cell: Cell, *, host: str, port: int | str, output_file: str,
                tokenizer: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    argv = [python, "-m", module, "--backend", "sglang", "--host", host, "--port", str(port),
            *cell.client_args(), "--output-file", output_file, "--disable-tqdm"]
    if tokenizer:
        argv += ["--tokenizer", tokenizer]
    return argv + list(extra)


@dataclass
class ClientRun:
    ok: bool
    result: dict[str, Any] | None
    reason: str = ""
    returncode: int | None = None


def run_client(argv: Sequence[str], env: Mapping[str, str], output_file: str, log_path: str,
               timeout_s: float) -> ClientRun:
    """Run the client once; its result is the JSON line it appended to ``output_file``."""
    before = _line_count(output_file)
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(list(argv), env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            return ClientRun(False, None, f"could not start the benchmark client: {exc}")
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return ClientRun(False, None, f"benchmark client timed out after {timeout_s:.0f} s")
        except BaseException:
            _kill_group(proc)  # interrupted sweep: the client is in its own session, nothing else stops it
            raise
    lines = _lines(output_file)[before:]
    result = None
    for line in reversed(lines):
        try:
            result = json.loads(line)
            break
        except ValueError:
            continue
    if rc != 0:
        return ClientRun(False, result, f"benchmark client exited with code {rc}", rc)
    if result is None:
        return ClientRun(False, None, "benchmark client wrote no result line", rc)
    return ClientRun(True, result, "", rc)


def _lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [ln for ln in f.read().splitlines() if ln.strip()]
    except OSError:
        return []


def _line_count(path: str) -> int:
    return len(_lines(path))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
