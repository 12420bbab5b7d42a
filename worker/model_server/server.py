"""The OpenAI embeddings API over MiniLM, on the standard library's HTTP server.

- `POST /v1/embeddings` `{"model": ..., "input": "text" | ["text", ...], "dimensions"?: 384}`
  answers `{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}],
  "model": ..., "usage": {"prompt_tokens": n, "total_tokens": n}}`. An input that is not a
  string or a list of strings, an empty list, more than `MAX_INPUTS` inputs, or `dimensions`
  other than the model's is a 400 with OpenAI's error shape; a wrong or missing key (when the
  server has one) a 401.
- `GET /v1/models`, and `GET /health` for a healthcheck (200 once the model is loaded).
- `GET /v1/tokenizer.json`: the model's tokenizer, for a client that cuts its inputs by tokens.

One forward pass runs at a time (the BLAS uses the cores); requests queue for it.
"""

from __future__ import annotations

import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from worker.model_server.minilm import MiniLM, default_model_dir

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_INPUTS = 2048
MAX_BODY_BYTES = 64 << 20


class EmbeddingsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], model: MiniLM, tokenizer_json: bytes, api_key: str | None = None):
        super().__init__(address, Handler)
        self.model, self.tokenizer_json, self.api_key = model, tokenizer_json, api_key
        self.forward = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: EmbeddingsServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise at this rate
        pass

    def do_GET(self) -> None:
        if self.path == "/health":
            self._json(200, {"status": "ok", "model": MODEL_NAME, "dimensions": self.server.model.dimensions})
        elif self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "local"}]})
        elif self.path == "/v1/tokenizer.json":
            self._send(200, self.server.tokenizer_json, "application/json")
        else:
            self._error(404, f"no route {self.path}", "invalid_request_error")

    def do_POST(self) -> None:
        if self.path != "/v1/embeddings":
            self._error(404, f"no route {self.path}", "invalid_request_error")
            return
        if not self._authorized():
            self._error(401, "Incorrect API key provided.", "invalid_api_key")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._error(413, "request too large", "invalid_request_error")
            return
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            self._error(400, "the body is not JSON", "invalid_request_error")
            return
        problem, texts = self._inputs(body)
        if problem:
            self._error(400, problem, "invalid_request_error")
            return
        encodings = self.server.model.encode(texts)
        with self.server.forward:
            vectors = self.server.model.embed_encoded(encodings)
        tokens = sum(len(e.ids) for e in encodings)
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        self._json(200, {"object": "list", "data": data, "model": body.get("model") or MODEL_NAME,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _inputs(self, body: Any) -> tuple[str | None, list[str]]:
        if not isinstance(body, dict) or "input" not in body:
            return "'input' is a required property", []
        texts = body["input"]
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return "'input' must be a string or a non-empty array of strings", []
        if len(texts) > MAX_INPUTS:
            return f"'input' has {len(texts)} items; at most {MAX_INPUTS}", []
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != self.server.model.dimensions:
            return f"this model gives {self.server.model.dimensions} dimensions, not {dimensions}", []
        return None, texts

    def _authorized(self) -> bool:
        key = self.server.api_key
        if not key:
            return True
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {key}".encode())

    def _error(self, status: int, message: str, kind: str) -> None:
        self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(host: str, port: int, model_dir: Path | None = None, api_key: str | None = None) -> EmbeddingsServer:
    """A server bound to (host, port) with the model loaded; call `serve_forever()` on it."""
    model = MiniLM(model_dir)
    tokenizer = Path(model_dir or default_model_dir()) / "tokenizer.json"
    return EmbeddingsServer((host, port), model, tokenizer.read_bytes(), api_key)

