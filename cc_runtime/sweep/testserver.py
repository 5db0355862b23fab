"""A loopback TEST SERVER: a stand-in for SGLang's GPU server, for tests and CPU-only smoke sweeps.

SGLang cannot serve on a machine without a GPU (every sglang-kernel wheel needs libcuda), so this
process speaks the part of SGLang's HTTP API that its benchmark client and the sweep use: ``GET /health``,
``/v1/models``, ``/model_info``, ``/server_info`` (and ``/get_server_info``), ``POST /generate`` (streamed
as server-sent events with cumulative ``text`` and ``meta_info.completion_tokens``, as SGLang does) and
``/flush_cache``. It generates no real tokens and runs no model: its latencies are whatever its flags say
(``--ttft-ms``, ``--tpot-ms``, ``--tpot-ms-per-running``), and it can fail requests, crash, or never become
healthy on purpose. The sweep labels everything measured against it as coming from a test server.

Run: ``python -m cc_runtime.sweep.testserver --host 127.0.0.1 --port N --model-path DIR [SGLang args]``;
SGLang server arguments it does not know (``--tp``, ``--load-format`` ...) are accepted and ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NOTE = "cc_runtime loopback TEST SERVER: a stand-in for an SGLang GPU server, no model runs here"
WORDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cc_runtime.sweep.testserver", description=NOTE,
                                allow_abbrev=False)  # "--tp 4" is SGLang's, not a prefix of --tpot-ms
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model-path", default="test-model")
    p.add_argument("--tokenizer-path", default=None)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--ttft-ms", type=float, default=5.0, help="delay before the first token")
    p.add_argument("--tpot-ms", type=float, default=1.0, help="delay per further token, alone")
    p.add_argument("--tpot-ms-per-running", type=float, default=0.0,
                   help="extra per-token delay for each other request in flight (a batch that slows down)")
    p.add_argument("--startup-delay-s", type=float, default=0.0, help="seconds before /health answers 200")
    p.add_argument("--never-healthy", action="store_true", help="/health never answers 200")
    p.add_argument("--exit-at-start", type=int, default=None, metavar="CODE",
                   help="exit with CODE right away (a server that dies while loading)")
    p.add_argument("--crash-after-requests", type=int, default=None, metavar="N",
                   help="the whole process exits (code 3) in the middle of its N-th /generate request")
    p.add_argument("--fail-every", type=int, default=None, metavar="N",
                   help="answer every N-th /generate request with HTTP 500")
    return p


class _State:
    def __init__(self, args: argparse.Namespace, ignored: list[str]) -> None:
        self.args = args
        self.ignored = ignored
        self.lock = threading.Lock()
        self.requests = 0
        self.running = 0
        self.ready_at = time.monotonic() + args.startup_delay_s

    def info(self) -> dict[str, Any]:
        from .. import settings

        try:
            s = settings.Settings.load()
            cc_runtime_settings: dict[str, Any] = {
                "disable": s.disable, "emulate": s.emulate,
                "patches": "*" if s.patches is None else ",".join(sorted(s.patches)),
                "bootstrap": settings.get("CC_RUNTIME_BOOTSTRAP")}
        except settings.SettingsError as exc:
            cc_runtime_settings = {"error": str(exc)}
        a = self.args
        return {"test_server": True, "note": NOTE, "version": "test-server", "model_path": a.model_path,
                "tokenizer_path": a.tokenizer_path or a.model_path,
                "served_model_name": a.served_model_name or a.model_path, "ignored_args": self.ignored,
                "ttft_ms": a.ttft_ms, "tpot_ms": a.tpot_ms, "tpot_ms_per_running": a.tpot_ms_per_running,
                "requests_seen": self.requests, "pid": os.getpid(), "cc_runtime_settings": cc_runtime_settings}


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection; a stream ends when we close

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def _json(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _ready(self) -> bool:
            return not state.args.never_healthy and time.monotonic() >= state.ready_at

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?")[0]
            if path in ("/health", "/health_generate", "/v1/models") and not self._ready():
                self._json(503, {"error": "not ready"})
            elif path in ("/health", "/health_generate"):
                self._json(200, {})
            elif path == "/v1/models":
                name = state.args.served_model_name or state.args.model_path
                self._json(200, {"object": "list", "data": [{"id": name, "object": "model",
                                                              "owned_by": "cc_runtime test server"}]})
            elif path == "/model_info":
                a = state.args
                self._json(200, {"model_path": a.model_path, "tokenizer_path": a.tokenizer_path or a.model_path,
                                 "is_generation": True, "test_server": True})
            elif path in ("/server_info", "/get_server_info"):
                self._json(200, state.info())
            else:
                self._json(404, {"error": f"the test server does not implement GET {path}"})

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?")[0]
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._json(400, {"error": "body is not JSON"})
                return
            if path == "/flush_cache":
                self._json(200, {})
            elif path == "/generate":
                self._generate(body)
            else:
                self._json(404, {"error": f"the test server does not implement POST {path}"})

        def _generate(self, body: dict[str, Any]) -> None:
            a = state.args
            with state.lock:
                state.requests += 1
                n = state.requests
                state.running += 1
            try:
                if a.fail_every and n % a.fail_every == 0:
                    self._json(500, {"error": f"test server: request {n} failed on purpose (--fail-every)"})
                    return
                ids = body.get("input_ids")
                prompt_tokens = len(ids) if isinstance(ids, list) else None
                params = body.get("sampling_params") or {}
                max_new = max(1, int(params.get("max_new_tokens") or 16))
                stream = bool(body.get("stream"))
                crash_at = (max_new // 2) if a.crash_after_requests and n >= a.crash_after_requests else None
                time.sleep(a.ttft_ms / 1000.0)
                if stream:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                text = ""
                for i in range(max_new):
                    if i:
                        time.sleep((a.tpot_ms + a.tpot_ms_per_running * max(0, state.running - 1)) / 1000.0)
                    if crash_at is not None and i >= crash_at:
                        os._exit(3)  # the whole server dies mid-stream, as a crashed scheduler takes it down
                    text += " " + WORDS[(n + i) % len(WORDS)]
                    if stream:
                        chunk = {"text": text, "meta_info": _meta(n, i + 1, max_new, prompt_tokens)}
                        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                        self.wfile.flush()
                if stream:
                    self.wfile.write(b"data: [DONE]\n\n")
                else:
                    self._json(200, {"text": text, "meta_info": _meta(n, max_new, max_new, prompt_tokens)})
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with state.lock:
                    state.running -= 1

    return Handler


def _meta(n: int, done: int, total: int, prompt_tokens: int | None) -> dict[str, Any]:
    finish = {"type": "length", "length": total} if done == total else None
    meta: dict[str, Any] = {"id": f"test-{n}", "completion_tokens": done, "finish_reason": finish,
                            "cached_tokens": 0}
    if prompt_tokens is not None:
        # Only for token-id prompts: this server does not tokenize text, and without the field the
        # client keeps its own prompt length.
        meta["prompt_tokens"] = prompt_tokens
    return meta


def main(argv: list[str] | None = None) -> int:
    args, ignored = _parser().parse_known_args(argv)
    if args.exit_at_start is not None:
        print(f"{NOTE}: exiting with code {args.exit_at_start} at start (--exit-at-start)", file=sys.stderr)
        return int(args.exit_at_start)
    state = _State(args, ignored)
    server = ThreadingHTTPServer((args.host, args.port), _handler(state))
    server.daemon_threads = True
    print(f"{NOTE}; pid {os.getpid()}, listening on http://{args.host}:{args.port}; ignored SGLang args: "
          f"{ignored}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
