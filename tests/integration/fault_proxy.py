"""A small HTTP proxy in front of the real embeddings server that injects the faults an
embeddings provider has: a 429 with Retry-After, a 500, a response slower than the client's
timeout, a short response (a vector missing), a vector of the wrong dimension, a refusal (400)
of every request holding a poison text, a refused key (401). It counts what it was asked.

    proxy = FaultProxy(upstream_url).start()
    proxy.once("429", "500", "pass", "slow")   # each on one request, in order
    proxy.poison = "POISON"                                       # any request holding it: 400
    env["EMBEDDING_URL"] = proxy.url
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import httpx

#: "pass" forwards one request unchanged (to let one through between faults).
FAULTS = ("429", "500", "slow", "short", "wrong_dimension", "401", "pass")


class FaultProxy:
    def __init__(self, upstream: str, slow_seconds: float = 3.0, latency: float = 0.0):
        """`latency`: seconds added to every embeddings request, as a remote provider's round
        trip would (the benchmark's `--latency-ms`)."""
        self.upstream = upstream.rstrip("/")  # .../v1
        self.slow_seconds, self.latency = slow_seconds, latency
        self.poison: str | None = None
        self.always: str | None = None
        #: Called with each embeddings request's texts before it is answered (an application
        #: writing while the job waits for the provider).
        self.before_answer: Callable[[list[str]], None] | None = None
        self.pending: deque[str] = deque()
        self.requests: Counter[str] = Counter()  # by what happened: "forwarded", "429", ...
        self.embedded_texts = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._upstream = httpx.Client(timeout=120)
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> "FaultProxy":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()

    def once(self, *faults: str) -> None:
        """Inject each fault on one embeddings request, in order, starting with the next."""
        unknown = set(faults) - set(FAULTS)
        assert not unknown, unknown
        with self._lock:
            self.pending.extend(faults)

    def _next_fault(self, texts: list[str]) -> str | None:
        with self._lock:
            if self.always:
                return self.always
            if self.poison and any(self.poison in t for t in texts):
                return "poison"
            return self.pending.popleft() if self.pending else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                upstream = proxy._upstream.get(proxy.upstream + self.path.removeprefix("/v1"))
                self._send(upstream.status_code, upstream.content, {})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                texts = json.loads(body).get("input", [])
                texts = [texts] if isinstance(texts, str) else texts
                if proxy.before_answer is not None:
                    proxy.before_answer(texts)
                fault = proxy._next_fault(texts)
                with proxy._lock:
                    proxy.requests[fault or "forwarded"] += 1
                fault = None if fault == "pass" else fault
                if fault == "429":
                    return self._error(429, "Rate limit reached", {"Retry-After": "1"})
                if fault == "500":
                    return self._error(500, "The server had an error", {})
                if fault == "401":
                    return self._error(401, "Incorrect API key provided", {})
                if fault == "poison":
                    return self._error(400, "This input could not be embedded", {})
                time.sleep(proxy.slow_seconds if fault == "slow" else proxy.latency)
                upstream = proxy._upstream.post(proxy.upstream + "/embeddings", content=body, headers={"Content-Type": "application/json"})
                payload = upstream.json()
                if upstream.status_code == 200:
                    if fault == "short":
                        payload["data"] = payload["data"][:-1]
                    elif fault == "wrong_dimension":
                        payload["data"][0]["embedding"] = payload["data"][0]["embedding"][:-1]
                    else:
                        with proxy._lock:
                            proxy.embedded_texts += len(texts)
                self._send(upstream.status_code, json.dumps(payload).encode(), {})

            def _error(self, status: int, message: str, headers: dict[str, str]) -> None:
                self._send(status, json.dumps({"error": {"message": message, "type": "fault", "param": None, "code": None}}).encode(), headers)

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                    pass

        return Handler
