"""Start, health-check and stop one serving process, leaving nothing behind.

As in vLLM's sweep ``server.py``: the server runs in its own process session, so stopping it kills the
whole group (SGLang's launcher forks scheduler and detokenizer processes); readiness polls ``/health``
but fails fast when the process exits, and a failure carries the tail of the server's log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

HOST = "127.0.0.1"
LOG_TAIL_CHARS = 4000


class ServerError(RuntimeError):
    """The server exited, never became healthy, or could not start; the message has the log's tail."""


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def log_tail(path: str, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class ServerProcess:
    """One server: ``start()``, ``wait_ready()``, ``stop()`` (idempotent). Also a context manager."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], port: int, log_path: str,
                 host: str = HOST) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.port = port
        self.host = host
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                # Its own session: the server's whole process tree is one group we can kill.
                self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                raise ServerError(f"could not start {self.argv[0]!r}: {exc}") from None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_reason(self) -> str:
        rc = self.proc.poll() if self.proc is not None else None
        if rc is None:
            return "running"
        return f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"

    def wait_ready(self, timeout_s: float, poll_s: float = 1.0) -> float:
        """Seconds until ``/health`` answered 200. ServerError (with the log's tail) when the process
        exits first or ``timeout_s`` passes."""
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        while True:
            if not self.alive():
                raise ServerError(f"server {self.exit_reason()} before it became healthy; log tail "
                                  f"({self.log_path}):\n{log_tail(self.log_path)}")
            if self.healthy(timeout_s=min(5.0, max(0.1, deadline - time.monotonic()))):
                return time.monotonic() - t0
            if time.monotonic() >= deadline:
                raise ServerError(f"server not healthy after {timeout_s:.0f} s ({self.base_url}/health); "
                                  f"log tail ({self.log_path}):\n{log_tail(self.log_path)}")
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def healthy(self, timeout_s: float = 5.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=timeout_s) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the whole group, SIGKILL after ``grace_s``; waits for the leader."""
        proc = self.proc
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            if _group_gone(proc, wait):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_gone(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """True once no process of the group is left (children can outlive the leader)."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc.poll()  # reap the leader so it does not linger as a zombie member of its group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
