"""Postgres connections that reconnect after the server drops them, one per thread.

Long backfills outlive server restarts and failovers; holding one connection forever would turn
every restart into a crash. `Postgres.connection()` hands out a live connection and replaces a
broken one, so a retried operation simply asks again. Each thread gets its own connection (a
connection runs one statement at a time), so a pipelined reader and writers never queue on one.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Mapping

import psycopg
from psycopg import sql

APPLICATION_NAME = "backfill-worker"

#: Errors after which the same statement may succeed on a fresh connection.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.QueryCanceled,
    psycopg.errors.AdminShutdown,
    psycopg.errors.CannotConnectNow,
)

#: Errors caused by the data of particular rows: splitting the batch isolates them.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,
    psycopg.IntegrityError,
    psycopg.errors.RaiseException,  # a trigger refusing a row
)


class AuthenticationFailed(Exception):
    """The server refused our user or password: waiting will not help."""


class DatabaseMissing(Exception):
    """The database named in the configuration does not exist."""


# libpq reports connection-time refusals only as text, without a SQLSTATE, so these phrases
# (stable across PostgreSQL versions) are the only way to tell them from a server that is down.
def classify_connect_error(error: psycopg.OperationalError) -> Exception:
    """A permanent error for refused credentials or a missing database, else `error` itself."""
    message = str(error)
    if "password authentication failed" in message or "no pg_hba.conf entry" in message:
        return AuthenticationFailed(message)
    if "does not exist" in message:
        if 'role "' in message:
            return AuthenticationFailed(message)
        if 'database "' in message:
            return DatabaseMissing(message)
    return error


class Postgres:
    def __init__(self, conninfo: str | Mapping[str, Any], connect_timeout: int = 10, per_thread: bool = True):
        """`per_thread=False`: one connection for all threads (they take turns), for work that
        needs a single session, such as a temporary table."""
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._per_thread = per_thread
        self._local = threading.local()
        self._shared: psycopg.Connection | None = None
        self._all: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    def connection(self) -> psycopg.Connection:
        """This thread's usable connection: the current one, or a new one if closed or broken."""
        conn = getattr(self._local, "conn", None) if self._per_thread else self._shared
        if conn is None or conn.closed or conn.broken:
            conn = self._replace(conn)
        return conn

    def _replace(self, old: psycopg.Connection | None) -> psycopg.Connection:
        with self._lock:
            if old is not None and old in self._all:
                self._all.remove(old)
                old.close()
            shared = self._shared
            if not self._per_thread and shared is not None and shared is not old and not shared.broken:
                return shared  # another thread replaced it first
            conn = self._connect()
            self._all.append(conn)
            if self._per_thread:
                self._local.conn = conn
            else:
                self._shared = conn
            return conn

    def _connect(self) -> psycopg.Connection:
        # Autocommit: reads hold no transaction open between batches; writes use conn.transaction().
        options = dict(application_name=APPLICATION_NAME, connect_timeout=self._connect_timeout, autocommit=True)
        try:
            if isinstance(self._conninfo, str):
                return psycopg.connect(self._conninfo, **options)
            return psycopg.connect(**{**self._conninfo, **options})
        except psycopg.OperationalError as error:
            classified = classify_connect_error(error)
            if classified is error:
                raise
            raise classified from None

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            conns, self._all, self._shared = self._all, [], None
            self._local = threading.local()
        for conn in conns:
            conn.close()

    def column_types(self, schema: str, table: str) -> dict[str, str]:
        """Column name -> information_schema data_type; empty when the table does not exist."""
        with self.connection().cursor() as cur:
            cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s",
                (schema, table),
            )
            return dict(cur.fetchall())

    def __enter__(self) -> "Postgres":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fresh_schema(conn: psycopg.Connection, schema: str, ddl: str) -> None:
    """Schema `schema` made anew (dropped first if it exists), `ddl` run in it, and the
    connection's search_path left on it: an application's tables for a demo, a test or a
    benchmark. `CREATE EXTENSION` lines run first, in public: an extension is the database's,
    and must not be dropped with the schema."""
    s = sql.Identifier(schema)
    extensions = re.findall(r"^\s*CREATE EXTENSION[^;]*;", ddl, flags=re.MULTILINE | re.IGNORECASE)
    for statement in extensions:
        conn.execute(statement)
        ddl = ddl.replace(statement, "")
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(s))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(s))
    conn.execute(sql.SQL("SET search_path TO {}, public").format(s))
    conn.execute(ddl)
