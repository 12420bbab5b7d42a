"""A provider shaped like OpenAI's embeddings API in front of the project's model server: it
serves no tokenizer (every GET is OpenAI's 404), and refuses any request holding an input over
`limit` tokens with OpenAI's 400 and wording. It counts tokens with the model's own tokenizer,
special tokens included, as a model's context does: a tokenizer the worker does not have.

    provider = OpenAIShapedProvider(model_server.url, limit=45).start()
    env["EMBEDDING_URL"] = provider.url

It is a FaultProxy (its server, counters and forwarding) with OpenAI's answers instead of faults.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

from tokenizers import Tokenizer

from tests.integration.fault_proxy import FaultProxy
from worker.model_server.minilm import default_model_dir


class OpenAIShapedProvider(FaultProxy):
    def __init__(self, upstream: str, limit: int):
        self.limit = limit
        self.tokenizer = Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        super().__init__(upstream)

    def tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text).ids)

    def too_long(self, texts: list[str]) -> str | None:
        """OpenAI's message refusing `texts` if one is over the limit, else None."""
        longest = max(self.tokens(t) for t in texts)
        if longest <= self.limit:
            return None
        return (
            f"This model's maximum context length is {self.limit} tokens, however you requested {longest} tokens"
            f" ({longest} in your prompt; 0 for the completion). Please reduce your prompt; or completion length."
        )

    def _count(self, what: str) -> None:
        with self._lock:
            self.requests[what] += 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(super()._handler()):  # type: ignore[misc]  # FaultProxy's, bound to this proxy
            def do_GET(self) -> None:
                provider._count("tokenizer_404" if self.path.endswith("/tokenizer.json") else "other_404")
                self._error(404, f"Invalid URL (GET {self.path})", {})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                refusal = provider.too_long(json.loads(body)["input"])
                provider._count("embedded" if refusal is None else "too_long")
                if refusal is not None:
                    return self._error(400, refusal, {})
                upstream = provider._upstream.post(f"{provider.upstream}/embeddings", content=body, headers={"Content-Type": "application/json"})
                self._send(upstream.status_code, upstream.content, {})

        return Handler
