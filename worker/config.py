"""Settings read from the environment (and `.env`), validated before any connection is made.

Every variable is checked for type and range up front so that a typo fails in one clear line
(exit code 2) instead of an hour into a backfill. Secret values (passwords, API keys, URIs that
may embed credentials) are never echoed back in an error message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, TypeVar
from urllib.parse import unquote, unquote_plus, urlsplit

from worker.exceptions import ConfigError

T = TypeVar("T")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class TableName:
    """A schema-qualified table name, split so each part can be quoted as an identifier."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Settings:
    job: str = "inventory_fields"
    dry_run: bool = False
    #: A dry run that still calls external providers (`--dry-run=calls`): it spends, but finds
    #: the inputs a provider refuses.
    dry_run_calls: bool = False

    db_host: str = "localhost"
    db_port: int = 5432
    db_database: str = "postgres"
    db_user: str = "postgres"
    db_password: str = field(default="", repr=False)
    db_sslmode: str = "prefer"
    database_url: str | None = field(default=None, repr=False)

    mongo_uri: str = field(default="mongodb://localhost:27017", repr=False)
    mongo_db_name: str = "backfill_worker"
    mongo_checkpoint_collection: str = "inventory_backfill_checkpoint"
    mongo_failures_collection: str = "inventory_backfill_failures"

    typesense_host: str = "localhost"
    typesense_port: int = 8108
    typesense_protocol: str = "http"
    typesense_api_key: str = field(default="", repr=False)
    typesense_collection: str = "products_search"
    typesense_timeout_seconds: float = 120.0

    batch_size: int = 1000
    batch_size_min: int = 100
    batch_size_max: int = 100_000
    batch_target_seconds: float = 2.0
    pipeline_depth: int = 2
    sleep_between_batches: float = 1.0

    throttle_check_seconds: float = 5.0
    throttle_pg_max_active: int = 50
    throttle_pg_max_replication_lag_seconds: float = 30.0
    throttle_ts_max_pending_writes: int = 20

    retry_timeout_seconds: float = 300.0
    retry_max_wait_seconds: float = 30.0
    lease_ttl_seconds: float = 60.0
    stop_timeout_seconds: float = 10.0

    log_format: str = "json"
    log_level: str = "INFO"

    def secrets(self) -> list[str]:
        """Values that must never reach a log line or an error message: the passwords, the API
        key, and the passwords inside the URIs, as written and percent-decoded (as a client
        uses them). utils.logging.SecretScrubber finds secrets by their shape (URL userinfo,
        `password=`, secret-named keys); these values are searched for only where they are
        specific enough not to be ordinary words (`postgres` is not)."""
        candidates = [self.db_password, self.typesense_api_key]
        candidates += _uri_passwords(self.mongo_uri)
        if self.database_url:
            candidates += _uri_passwords(self.database_url)
        return list(dict.fromkeys(s for s in candidates if s))

    def pg_conninfo(self) -> str | dict[str, object]:
        """What psycopg.connect takes: DATABASE_URL verbatim when given, else keyword parts."""
        if self.database_url:
            return self.database_url
        return {
            "host": self.db_host,
            "port": self.db_port,
            "dbname": self.db_database,
            "user": self.db_user,
            "password": self.db_password,
            "sslmode": self.db_sslmode,
        }


def _uri_passwords(uri: str) -> list[str]:
    """The password in `uri`'s userinfo, as written and as decoded by libpq (%XX) and by
    pymongo (%XX and `+`)."""
    try:
        password = urlsplit(uri).password
    except ValueError:
        return []
    return [password, unquote(password), unquote_plus(password)] if password else []


class EnvReader:
    """Reads one variable at a time and turns any problem into a ConfigError naming it."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value if value else None

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = (self.raw(name) or default).lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def number(
        self,
        name: str,
        default: T,
        parse: Callable[[str], T],
        minimum: float,
        maximum: float | None = None,
    ) -> T:
        value = self.raw(name)
        if value is None:
            return default
        kind = "an integer" if parse is int else "a number"
        try:
            parsed = parse(value)
        except ValueError:
            raise ConfigError(name, f"must be {kind}, got {value!r}") from None
        if parsed != parsed or parsed < minimum or (maximum is not None and parsed > maximum):
            bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise ConfigError(name, f"must be {bounds}, got {value!r}")
        return parsed

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ConfigError(name, f"must be true or false, got {value!r}")

    def identifier(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not _IDENTIFIER.match(value):
            raise ConfigError(name, f"must be a plain name (letters, digits, _), got {value!r}")
        return value

    def table(self, name: str, default: str) -> TableName:
        value = self.text(name, default)
        parts = value.split(".")
        if len(parts) == 1:
            parts = ["public", parts[0]]
        if len(parts) != 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ConfigError(name, f"must be 'schema.table' with plain names, got {value!r}")
        return TableName(*parts)

    def uri(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        value = self.text(name, default)
        try:
            scheme = urlsplit(value).scheme
        except ValueError:
            scheme = ""
        if scheme not in schemes:
            # The value itself may hold a password: describe it, never print it.
            raise ConfigError(name, f"must be a URI starting with {' or '.join(s + '://' for s in schemes)}")
        return value


def environment() -> Mapping[str, str]:
    """os.environ, after loading the `.env` of the directory the worker is started from (real
    environment variables win)."""
    from dotenv import find_dotenv, load_dotenv

    load_dotenv(find_dotenv(usecwd=True), override=False)
    return os.environ


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build validated Settings from `env` (default: `environment()`)."""
    if env is None:
        env = environment()
    r = EnvReader(env)
    dry_run_calls = (r.raw("DRY_RUN") or "").lower() == "calls"
    database_url = None
    if r.raw("DATABASE_URL"):
        database_url = r.uri("DATABASE_URL", "", ("postgres", "postgresql"))
    values: dict[str, object] = dict(
        job=r.text("JOB", Settings.job),
        dry_run=dry_run_calls or r.flag("DRY_RUN", False),
        dry_run_calls=dry_run_calls,
        db_host=r.text("DB_HOST", Settings.db_host),
        db_port=r.number("DB_PORT", Settings.db_port, int, 1, 65535),
        db_database=r.text("DB_DATABASE", Settings.db_database),
        db_user=r.text("DB_USER", Settings.db_user),
        db_password=r.text("DB_PASSWORD", ""),
        db_sslmode=r.choice(
            "DB_SSLMODE", Settings.db_sslmode,
            ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
        ),
        database_url=database_url,
        mongo_uri=r.uri("MONGO_URI", Settings.mongo_uri, ("mongodb", "mongodb+srv")),
        mongo_db_name=r.identifier("MONGO_DB_NAME", Settings.mongo_db_name),
        mongo_checkpoint_collection=r.identifier(
            "MONGO_CHECKPOINT_COLLECTION", Settings.mongo_checkpoint_collection
        ),
        mongo_failures_collection=r.identifier(
            "MONGO_FAILURES_COLLECTION", Settings.mongo_failures_collection
        ),
        typesense_host=r.text("TYPESENSE_HOST", Settings.typesense_host),
        typesense_port=r.number("TYPESENSE_PORT", Settings.typesense_port, int, 1, 65535),
        typesense_protocol=r.choice("TYPESENSE_PROTOCOL", Settings.typesense_protocol, ("http", "https")),
        typesense_api_key=r.text("TYPESENSE_API_KEY", ""),
        typesense_collection=r.text("TYPESENSE_COLLECTION", Settings.typesense_collection),
        typesense_timeout_seconds=r.number(
            "TYPESENSE_TIMEOUT_SECONDS", Settings.typesense_timeout_seconds, float, 1, 3600
        ),
        batch_size=r.number("BATCH_SIZE", Settings.batch_size, int, 1, 100_000),
        batch_size_min=r.number("BATCH_SIZE_MIN", Settings.batch_size_min, int, 1, 100_000),
        batch_size_max=r.number("BATCH_SIZE_MAX", Settings.batch_size_max, int, 1, 1_000_000),
        batch_target_seconds=r.number("BATCH_TARGET_SECONDS", Settings.batch_target_seconds, float, 0.05, 600),
        pipeline_depth=r.number("PIPELINE_DEPTH", Settings.pipeline_depth, int, 1, 8),
        throttle_check_seconds=r.number("THROTTLE_CHECK_SECONDS", Settings.throttle_check_seconds, float, 0, 3600),
        throttle_pg_max_active=r.number("THROTTLE_PG_MAX_ACTIVE", Settings.throttle_pg_max_active, int, 1, 100_000),
        throttle_pg_max_replication_lag_seconds=r.number(
            "THROTTLE_PG_MAX_REPLICATION_LAG_SECONDS", Settings.throttle_pg_max_replication_lag_seconds, float, 0, 86_400
        ),
        throttle_ts_max_pending_writes=r.number(
            "THROTTLE_TS_MAX_PENDING_WRITES", Settings.throttle_ts_max_pending_writes, int, 0, 1_000_000
        ),
        sleep_between_batches=r.number(
            "SLEEP_BETWEEN_BATCHES", Settings.sleep_between_batches, float, 0, 3600
        ),
        retry_timeout_seconds=r.number(
            "RETRY_TIMEOUT_SECONDS", Settings.retry_timeout_seconds, float, 0, 86_400
        ),
        retry_max_wait_seconds=r.number(
            "RETRY_MAX_WAIT_SECONDS", Settings.retry_max_wait_seconds, float, 0, 600
        ),
        lease_ttl_seconds=r.number("LEASE_TTL_SECONDS", Settings.lease_ttl_seconds, float, 1, 3600),
        stop_timeout_seconds=r.number(
            "STOP_TIMEOUT_SECONDS", Settings.stop_timeout_seconds, float, 0.1, 600
        ),
        log_format=r.choice("LOG_FORMAT", _default_log_format(), ("json", "console")),
        log_level=r.choice("LOG_LEVEL", Settings.log_level, ("debug", "info", "warning", "error")).upper(),
    )
    if r.raw("BATCH_SIZE_MIN") and values["batch_size_min"] > values["batch_size_max"]:  # type: ignore[operator]
        raise ConfigError("BATCH_SIZE_MIN", f"must not exceed BATCH_SIZE_MAX ({values['batch_size_max']})")
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


#: Stores a job may use besides Postgres and MongoDB (always), and the variable each requires.
STORE_REQUIRES = {"typesense": ("typesense_api_key", "TYPESENSE_API_KEY")}


def require_stores(settings: Settings, stores: frozenset[str], job: str) -> None:
    """ConfigError naming the first variable a store of `stores` needs and lacks: a variable
    is required only by a job that uses its store."""
    for store in sorted(stores):
        if store not in STORE_REQUIRES:
            raise ConfigError("JOB", f"{job!r} uses an unknown store {store!r} (known: {', '.join(STORE_REQUIRES)})")
        field_name, variable = STORE_REQUIRES[store]
        if not getattr(settings, field_name):
            raise ConfigError(variable, f"is required (job {job!r} uses {store})")


def _default_log_format() -> str:
    """JSON when a machine reads stdout (docker logs), readable text at a terminal."""
    import sys

    return "console" if sys.stdout.isatty() else "json"
