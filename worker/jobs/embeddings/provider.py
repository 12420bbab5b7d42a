"""An OpenAI-compatible embeddings provider: `POST {url}/embeddings`, every answer checked.

- **Inputs** are cut by tokens of the model's tokenizer (`Inputs`), so a long description is
  shortened where the model would stop reading, not mid-word or past it. The tokenizer is
  EMBEDDING_TOKENIZER's, else the one the provider serves at `{url}/tokenizer.json` (the local
  model server does; OpenAI and most providers do not). Without one, the inputs are cut to
  EMBEDDING_MAX_TOKENS characters (a token covers a character at least, so no more tokens than
  that), and a text the provider still refuses as too long is halved by the caller.
- **Answers** must hold exactly one vector per input, in order (by `index`), each of the
  configured dimension, every value finite. Anything else is the provider's error: raised as
  `HttpUnavailable`, so it is retried like a 5xx.
- **Errors:** 429 waits for `Retry-After`, 5xx and timeouts are retried with backoff (both by
  the worker's retry policy, through `ctx.retry`); 401/403 are `AccessDenied` (exit 6); a 400 is
  `InputRefused`: the caller splits the request until the input the provider refuses stands alone.
  A 400 that says the input is too long (`TOO_LONG`), or a 413, is `InputTooLong`: the caller
  halves that text instead of recording it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import httpx
from tokenizers import Tokenizer

from utils.http import HttpUnavailable, check, transport_errors
from worker.exceptions import AccessDenied, ConfigError

SERVICE = "embeddings"

#: How providers say an input is too long for the model: OpenAI ("This model's maximum context
#: length is 8192 tokens, however you requested 9000 tokens ...", "Invalid 'input': maximum
#: context length is 8192 tokens.", "Requested 319487 tokens, max 300000 tokens per request"),
#: vLLM (the same first words), Ollama ("the input length exceeds the context length"),
#: text-embeddings-inference ("`inputs` must have less than 512 tokens. Given: 514"), and the
#: plain "too long" / "too many tokens" of others.
TOO_LONG = re.compile(
    r"context length|context_length_exceeded|max \d+ tokens per request|must have less than \d+ (tokens|characters)|too long|too many tokens",
    re.IGNORECASE,
)


class InputRefused(Exception):
    """The provider refused a request for its inputs (HTTP 400): one of them is poison."""


class InputTooLong(InputRefused):
    """The provider refused a request because an input is longer than its model takes: that
    text is not poison, only too long for a cut made without the model's tokenizer."""


class NoTokenizer(Exception):
    """A tokenizer.json that cannot be had (not served, unreadable, not a tokenizer)."""


class Inputs:
    """Texts cut to `max_tokens` tokens of the model's tokenizer, or to `max_tokens` characters
    without one; `rule` says which, for the preflight's log."""

    def __init__(self, tokenizer: Tokenizer | None, max_tokens: int, rule: str):
        self.tokenizer, self.max_tokens, self.rule = tokenizer, max_tokens, rule
        if tokenizer is not None:
            tokenizer.no_truncation()
            tokenizer.no_padding()

    @classmethod
    def load(cls, source: str, max_tokens: int, timeout: float) -> "Inputs":
        """EMBEDDING_TOKENIZER's (a path or URL): given explicitly, so unusable is a ConfigError
        naming it, not a silent fall back to characters."""
        try:
            return cls(_tokenizer(source, timeout), max_tokens, f"EMBEDDING_TOKENIZER {source}")
        except NoTokenizer as error:
            raise ConfigError("EMBEDDING_TOKENIZER", f"gives no usable tokenizer.json ({source}): {error}") from None

    @classmethod
    def served_by(cls, url: str, max_tokens: int, timeout: float) -> "Inputs":
        """The provider's `{url}/tokenizer.json` when it serves one; else the character rule
        (a provider other than the local model server serves none, which is no error)."""
        source = f"{url.rstrip('/')}/tokenizer.json"
        try:
            return cls(_tokenizer(source, timeout), max_tokens, f"the provider's tokenizer.json ({source})")
        except NoTokenizer as error:
            return cls(
                None, max_tokens,
                f"none ({source}: {error}): inputs cut to {max_tokens} characters; a text the provider refuses as too long is halved",
            )

    def cut(self, texts: Sequence[str]) -> list[str]:
        """Each text, or its first `max_tokens` tokens' worth of characters (`max_tokens`
        characters without a tokenizer). A text of at most `max_tokens` characters is not
        tokenized: every token covers a character at least."""
        out = list(texts)
        long_ = [i for i, t in enumerate(out) if len(t) > self.max_tokens]
        if self.tokenizer is None:
            for i in long_:
                out[i] = out[i][: self.max_tokens].rstrip()
            return out
        encodings = self.tokenizer.encode_batch([out[i] for i in long_], add_special_tokens=False) if long_ else []
        for i, encoding in zip(long_, encodings):
            if len(encoding.ids) > self.max_tokens:
                out[i] = out[i][: encoding.offsets[self.max_tokens - 1][1]].rstrip()
        return out


def _tokenizer(source: str, timeout: float) -> Tokenizer:
    """A tokenizer.json from a path or an http(s) URL; NoTokenizer if it cannot be had (a
    server that may answer later is HttpUnavailable, retried)."""
    try:
        if not source.startswith(("http://", "https://")):
            return Tokenizer.from_file(str(Path(source)))
        with transport_errors(SERVICE):
            response = check(httpx.get(source, timeout=timeout), SERVICE)
        if response.status_code != 200:
            raise NoTokenizer(f"HTTP {response.status_code}: {_message(response)}")
        return Tokenizer.from_str(response.text)
    except (HttpUnavailable, NoTokenizer):
        raise
    except Exception as error:  # the file system, or the tokenizers library (a plain Exception)
        raise NoTokenizer(f"{type(error).__name__}: {error}") from None


class Provider:
    def __init__(self, url: str, model: str, dimensions: int, api_key: str | None, timeout: float):
        self.url = url.rstrip("/") + "/embeddings"
        self.model, self.dimensions = model, dimensions
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One checked vector per text, in order."""
        return self._post(texts, self.dimensions)

    def probe(self) -> int:
        """The dimension of the model's vectors, from one request (for the preflight, which
        reports another dimension as a configuration error instead of retrying)."""
        return len(self._post(["preflight"], None)[0])

    def _post(self, texts: Sequence[str], dimensions: int | None) -> list[list[float]]:
        with transport_errors(SERVICE):
            response = self.client.post(self.url, json={"model": self.model, "input": list(texts)})
        check(response, SERVICE)
        if response.status_code in (401, 403):
            raise AccessDenied(f"the embeddings provider refused EMBEDDING_API_KEY (HTTP {response.status_code}): {_message(response)}")
        if response.status_code in (400, 413):
            message = _message(response)
            if response.status_code == 413 or TOO_LONG.search(message):
                raise InputTooLong(message)
            raise InputRefused(message)
        if response.status_code != 200:
            raise HttpUnavailable(SERVICE, f"HTTP {response.status_code}: {_message(response)}")
        return self._vectors(response, len(texts), dimensions)

    def _vectors(self, response: httpx.Response, expected: int, dimensions: int | None) -> list[list[float]]:
        try:
            data = response.json()["data"]
            by_index = {int(item["index"]): item["embedding"] for item in data}
        except (ValueError, KeyError, TypeError) as error:
            raise HttpUnavailable(SERVICE, f"an answer that is not an embeddings list: {type(error).__name__}: {error}") from None
        if len(data) != expected or sorted(by_index) != list(range(expected)):
            raise HttpUnavailable(SERVICE, f"{len(data)} embeddings for {expected} inputs")
        vectors = [by_index[i] for i in range(expected)]
        for i, vector in enumerate(vectors):
            if not isinstance(vector, list) or len(vector) != (dimensions or len(vector)):
                size = len(vector) if isinstance(vector, list) else type(vector).__name__
                raise HttpUnavailable(SERVICE, f"embedding {i} has {size} dimensions, not EMBEDDING_DIMENSIONS={dimensions}")
            if not _finite(vector):
                raise HttpUnavailable(SERVICE, f"embedding {i} holds a value that is not a finite number")
        return vectors


def _finite(vector: list[Any]) -> bool:
    """Whether every value is a finite number: the sum of finite numbers is finite unless they
    are huge, so only a vector whose sum is not (or that holds something else) is looked at
    value by value."""
    try:
        if math.isfinite(math.fsum(vector)):
            return all(type(x) is float or type(x) is int for x in vector)
    except TypeError:  # a value that is not a number
        return False
    except OverflowError:  # finite values whose sum is not
        pass
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vector)


def _message(response: httpx.Response) -> str:
    """The error's message: OpenAI's `{"error": {"message": ...}}`, another provider's
    `{"error": "..."}`, else the body."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return str(message or body)[:300]
