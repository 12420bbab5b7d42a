"""Calls to an HTTP service (an embeddings provider, say): which answers are worth another try,
and how long the service asked us to wait.

An adapter sends its requests through `check` and `transport_errors`: a 429 or a 5xx answer,
or a connection that failed, becomes `HttpUnavailable` carrying the service's name and its
`Retry-After`, so the worker's retry policy names the right service in its logs and waits at
least as long as the service asked. Other answers are the adapter's to read.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Iterator

import httpx

#: Answers after which the same request may succeed later.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class HttpUnavailable(Exception):
    """A request to `service` that may succeed later; `retry_after`: seconds the service asked
    to wait (Retry-After), or None."""

    def __init__(self, service: str, message: str, retry_after: float | None = None):
        self.service, self.retry_after = service, retry_after
        super().__init__(f"{service}: {message}")


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header as seconds: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def check(response: httpx.Response, service: str) -> httpx.Response:
    """`response`, or HttpUnavailable when its status says to try again later."""
    if response.status_code in RETRYABLE_STATUS:
        raise HttpUnavailable(
            service, f"HTTP {response.status_code}", retry_after_seconds(response.headers.get("Retry-After"))
        )
    return response


@contextlib.contextmanager
def transport_errors(service: str) -> Iterator[None]:
    """Connection refused or reset, timeouts: HttpUnavailable naming `service`."""
    try:
        yield
    except httpx.TransportError as error:
        raise HttpUnavailable(service, f"{type(error).__name__}: {error}") from error
