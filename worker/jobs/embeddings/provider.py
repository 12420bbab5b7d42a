"""An OpenAI-compatible embeddings provider: `POST {url}/embeddings`, every answer checked.

- **Inputs** are cut by tokens of the model's tokenizer (`Inputs`), never by characters, so a
  long description is shortened where the model would stop reading, not mid-word or past it.
- **Answers** must hold exactly one vector per input, in order (by `index`), each of the
  configured dimension, every value finite. Anything else is the provider's error: raised as
  `HttpUnavailable`, so it is retried like a 5xx.
- **Errors:** 429 waits for `Retry-After`, 5xx and timeouts are retried with backoff (both by
  the worker's retry policy, through `ctx.retry`); 401/403 are `AccessDenied` (exit 6); a 400 is
  `InputRefused`: the caller splits the request until the input the provider refuses stands alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import httpx
from tokenizers import Tokenizer

from utils.http import HttpUnavailable, check, transport_errors
from worker.exceptions import AccessDenied, ConfigError

SERVICE = "embeddings"


class InputRefused(Exception):
    """The provider refused a request for its inputs (HTTP 400): one of them is poison."""


class Inputs:
    """Texts cut to `max_tokens` tokens of the model's tokenizer."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int):
        self.tokenizer, self.max_tokens = tokenizer, max_tokens
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    @classmethod
    def load(cls, source: str, max_tokens: int, timeout: float) -> "Inputs":
        """From a tokenizer.json path or URL; ConfigError naming EMBEDDING_TOKENIZER if unusable."""
        try:
            if source.startswith(("http://", "https://")):
                with transport_errors(SERVICE):
                    response = check(httpx.get(source, timeout=timeout), SERVICE)
                response.raise_for_status()
                return cls(Tokenizer.from_str(response.text), max_tokens)
            return cls(Tokenizer.from_file(str(Path(source))), max_tokens)
        except HttpUnavailable:
            raise
        except Exception as error:  # httpx, the file system, or the tokenizers library (a plain Exception)
            raise ConfigError("EMBEDDING_TOKENIZER", f"gives no usable tokenizer.json ({source}): {type(error).__name__}: {error}") from None

    def cut(self, texts: Sequence[str]) -> list[str]:
        """Each text, or its first `max_tokens` tokens' worth of characters. A text of at most
        `max_tokens` characters is not tokenized: every token covers a character at least."""
        out = list(texts)
        long_ = [i for i, t in enumerate(out) if len(t) > self.max_tokens]
        encodings = self.tokenizer.encode_batch([out[i] for i in long_], add_special_tokens=False) if long_ else []
        for i, encoding in zip(long_, encodings):
            if len(encoding.ids) > self.max_tokens:
                out[i] = out[i][: encoding.offsets[self.max_tokens - 1][1]].rstrip()
        return out


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
        if response.status_code == 400:
            raise InputRefused(_message(response))
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
    try:
        body: Any = response.json()
        return str(body.get("error", {}).get("message") or body)[:300]
    except ValueError:
        return response.text[:300]
