"""structlog set-up: one JSON object per line for `docker logs`, or readable text at a terminal.

Secrets are scrubbed from every event as the last step before rendering, so a password that
slips into an exception message (a connection URI, say) still never reaches a log line. They
are found by their shape (see `SecretScrubber`), not by searching for every secret value: the
demo's password is "postgres", and `service=postgres` must stay readable.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Iterable, TextIO

import structlog

REDACTED = "***"


#: Names that say their value is a secret: the whole name, with any prefix (`db_`, `ssl`,
#: `x-typesense-`, `TYPESENSE_`), ends with one of these. `key` alone is not one: rows have keys.
_SECRET_KEY = re.compile(
    r"(?i)[\w.-]*?(?:password|passwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    r"|secret[_-]?key|authorization|credentials?|cookie)"
)
#: A cheap first look (lower case): the patterns below run only on a string holding one of these.
_HINTS = ("://", "passw", "secret", "token", "key", "authorization", "credential", "cookie", "percent-encoded", "unexpected spaces")
_NAME = r"(?P<name>[A-Za-z0-9_.-]+)"
_QUOTED = r"""b?'(?:[^'\\]|\\.)*'|b?"(?:[^"\\]|\\.)*\""""

_PATTERNS: list[re.Pattern[str]] = [
    # URL userinfo, any scheme: postgresql://user:PASSWORD@host, mongodb://user:PASSWORD@h1,h2.
    # The password runs to the last `@` before the path: an unescaped `@` in it is covered too.
    re.compile(r"""(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@"'<>`]*:)(?P<value>[^\s/?#"'<>`]+)(?=@)"""),
    # name=value with a secret's name: libpq conninfo (password='...', sslpassword=...), URL
    # query strings (?password=...&), keyword reprs (api_key='...').
    re.compile(rf"""(?P<head>(?<![\w.-]){_NAME}\s*=\s*)(?P<value>{_QUOTED}|[^\s&'"][^\s&]*)"""),
    # A mapping's quoted key with a secret's name: dict reprs and JSON ('api_key': '...').
    re.compile(rf"""(?P<head>(?P<q>['"]){_NAME}(?P=q)\s*:\s*)(?P<value>{_QUOTED}|[^\s,}}\]]+)"""),
    # A (name, value) pair of a header list's repr: (b'X-TYPESENSE-API-KEY', b'...').
    re.compile(rf"""(?P<head>\(\s*b?(?P<q>['"]){_NAME}(?P=q)\s*,\s*)(?P<value>{_QUOTED})(?=\s*\))"""),
    # HTTP header lines: `X-TYPESENSE-API-KEY: value`, `Authorization: Bearer value`. Only
    # header spellings (hyphens), so that "TYPESENSE_API_KEY: <why it was refused>" survives.
    re.compile(
        r"(?i)(?P<head>(?<![\w-])(?:x-typesense-api-key|x-api-key|authorization|proxy-authorization|cookie)\s*:\s*"
        r"(?:(?:bearer|basic|digest|token)\s+)?)(?P<value>[^\s,;'\"]+)"
    ),
    # libpq's connection-string parse errors quote the piece they could not decode, which may
    # be the password: invalid percent-encoded token: "p%zz", unexpected spaces found in "a b".
    re.compile(
        r'(?P<head>(?:invalid percent-encoded token|forbidden value %00 in percent-encoded value): '
        r'|unexpected spaces found in )(?P<value>"[^\n]*")'
    ),
]


def _redact(match: re.Match[str]) -> str:
    """`head` kept and `value` replaced, if the match has no `name` or a secret's name; a
    quoted value keeps its quotes (and `b` prefix)."""
    name = match.groupdict().get("name")
    if name is not None and not _SECRET_KEY.fullmatch(name):
        return match.group(0)
    value = match.group("value")
    quote = value[1:2] if value[:1] == "b" and value[1:2] in ("'", '"') else value[:1]
    if quote in ("'", '"') and len(value) >= 2 and value.endswith(quote):
        opening = value[: value.index(quote) + 1]
        return match.group("head") + opening + REDACTED + quote
    return match.group("head") + REDACTED


def specific(secret: str) -> bool:
    """Whether a secret value is unlikely to occur in a log line by chance, so that it can be
    redacted wherever it appears: 8 characters or more, mixing letters, digits or other
    characters (`demo-key`, a generated key), or 16 or more of anything. A plain word such as
    "postgres" is not: it is also a user, a database, a service name."""
    if len(secret) < 8:
        return False
    classes = sum(
        (any(c.isalpha() for c in secret), any(c.isdigit() for c in secret), any(not c.isalnum() for c in secret))
    )
    return classes >= 2 or len(secret) >= 16


class SecretScrubber:
    """Redacts secrets by their shape wherever they appear in an event:

    - the value of any key whose name says it is a secret (`password`, `db_password`, `api_key`,
      `x-typesense-api-key`, `token`, `secret`, `authorization`, ...), at any depth;
    - in strings: URL userinfo passwords (`scheme://user:***@host`), `password=...` and other
      secret-named `name=value` pairs (libpq conninfo, query strings), secret-named quoted keys
      of a dict repr or JSON, HTTP header lines (`X-TYPESENSE-API-KEY: ***`), and the piece of a
      connection string that libpq quotes when it cannot parse it.

    Nothing else is touched: a secret value is not searched for as a substring, except those
    of `secrets` that are `specific` enough never to be ordinary words. They are the last guard
    for a message that quotes a secret in a shape not listed here (a library's new error text,
    say); a weak password such as "postgres" is left to the shapes above, since replacing it
    everywhere would hide every user, database and service of that name.
    """

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets = sorted({s for s in secrets if s and specific(s)}, key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.lower()
            if any(hint in lowered for hint in _HINTS):
                for pattern in _PATTERNS:
                    value = pattern.sub(_redact, value)
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._scrub_item(k, v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.scrub(v) for v in value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        # Anything else is rendered by its str() (an exception, say): scrub that if it leaks.
        text = str(value)
        scrubbed = self.scrub(text)
        return value if scrubbed == text else scrubbed

    def _scrub_item(self, key: Any, value: Any) -> Any:
        if isinstance(key, str) and value not in (None, "") and _SECRET_KEY.fullmatch(key):
            return REDACTED
        return self.scrub(value)

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        return {k: self._scrub_item(k, v) for k, v in event.items()}


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
