"""structlog set-up: one JSON object per line for `docker logs`, or readable text at a terminal.

Secrets are scrubbed from every event as the last step before rendering, so a password that
slips into an exception message (a connection URI, say) still never reaches a log line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Iterable, TextIO

import structlog

REDACTED = "***"


class SecretScrubber:
    """Replaces each known secret value, wherever it appears in an event's strings."""

    def __init__(self, secrets: Iterable[str]):
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.scrub(v) for v in value)
        return value

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        return {k: self.scrub(v) for k, v in event.items()}


def configure(fmt: str, level: str, secrets: Iterable[str] = (), stream: TextIO | None = None) -> SecretScrubber:
    scrubber = SecretScrubber(secrets)
    renderer: Any = (
        structlog.processors.JSONRenderer(default=str)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrubber,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard logging module; keep their chatter (request lines) out.
    logging.basicConfig(level=logging.WARNING, stream=stream or sys.stdout)
    return scrubber
