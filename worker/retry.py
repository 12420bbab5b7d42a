"""Bounded retries with exponential backoff and jitter, for transient failures only.

Failures are classified by exception type, never by message text: a refused connection, a reset,
a timeout or an HTTP 5xx is retried; a bad credential or a missing table is not, because waiting
will not fix it. The backoff sleeps on the stop flag, so SIGTERM ends a retry loop at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

import pymongo.errors
import structlog
import tenacity

from utils import pg, typesense
from utils.http import HttpUnavailable
from worker.exceptions import ServiceUnavailable
from worker.stop import StopFlag

T = TypeVar("T")

_SERVICES: tuple[tuple[str, tuple[type[BaseException], ...]], ...] = (
    ("postgres", pg.TRANSIENT_ERRORS),
    ("typesense", typesense.TRANSIENT_ERRORS),
    ("mongodb", (pymongo.errors.ConnectionFailure,)),
)

#: Every exception type worth another attempt. HttpUnavailable names its own service (checked
#: first: an HTTP provider's errors are not Typesense's, though both travel over httpx).
RETRYABLE: tuple[type[BaseException], ...] = (HttpUnavailable, *(t for _, types in _SERVICES for t in types))

log = structlog.get_logger("worker.retry")


def service_of(error: BaseException) -> str:
    if isinstance(error, HttpUnavailable):
        return error.service
    for name, types in _SERVICES:
        if isinstance(error, types):
            return name
    return "unknown service"


@dataclass(frozen=True)
class RetryPolicy:
    #: Give up when a failure has lasted this long: an outage shorter than this is ridden out.
    timeout_seconds: float = 300.0
    max_wait_seconds: float = 30.0
    initial_wait_seconds: float = 0.5
    max_attempts: int | None = None

    def call(self, fn: Callable[[], T], *, what: str, stop: StopFlag) -> T:
        """Run `fn`, retrying transient failures; raise ServiceUnavailable when attempts run out."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RETRYABLE),
            wait=_AtLeastRetryAfter(
                tenacity.wait_random_exponential(multiplier=self.initial_wait_seconds, max=self.max_wait_seconds)
            ),
            stop=self._stop_condition(),
            sleep=stop.sleep,
            before_sleep=lambda state: _log_retry(what, state),
            reraise=True,
        )
        try:
            return retrying(fn)
        except RETRYABLE as error:
            raise ServiceUnavailable(service_of(error), error) from error


    def _stop_condition(self) -> tenacity.stop.stop_base:
        condition = tenacity.stop_after_delay(self.timeout_seconds)
        if self.max_attempts is not None:
            condition = condition | tenacity.stop_after_attempt(self.max_attempts)
        return condition


class _AtLeastRetryAfter(tenacity.wait.wait_base):
    """The backoff, or longer when the service said how long to wait (HTTP 429 Retry-After)."""

    def __init__(self, backoff: tenacity.wait.wait_base):
        self.backoff = backoff

    def __call__(self, state: tenacity.RetryCallState) -> float:
        wait = self.backoff(state)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        return max(wait, retry_after) if retry_after is not None else wait


def _log_retry(what: str, state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "retrying",
        operation=what,
        attempt=state.attempt_number,
        wait_s=round(state.upcoming_sleep, 2),
        service=service_of(error) if error else None,
        error=f"{type(error).__name__}: {error}" if error else None,
    )
