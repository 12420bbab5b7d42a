"""Where a job's writes go: the real servers, or nowhere (dry run).

Dry-run lives here and only here, so neither the engine nor a job needs `if dry_run:` around
each write. Every DDL and DML statement a job runs goes through a sink: `transaction` for one
or several in one transaction (writes, RETURNING, COPY, and the reads that must see them),
`scratch_transaction` for the job's own scratch tables, and `call` for a request to a provider
that writes or costs money, which a dry run makes only with `--dry-run=calls`. The dry-run sink still reads, so its report is real: an index
update of a document that does not exist is reported as the 404 the real import would have
answered. Its only writes are to scratch tables in `pg_temp`, which
belong to the dry run's own session and vanish with it: a dry run beside a running worker
cannot touch that worker's scratch table, nor any other table.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

import psycopg
import structlog
from psycopg import sql

from utils.pg import Postgres
from utils.typesense import EncodedDocuments, ImportFailure, ImportReport, TypesenseIndex
from worker.config import TableName

log = structlog.get_logger("worker.sink")

Params = Sequence[Any] | dict[str, Any]
T = TypeVar("T")


class Transaction:
    """Statements of one transaction: `write` changes data (skipped in a dry run, which answers
    0), `read` runs everywhere and sees this transaction's own writes."""

    def __init__(self, cursor: psycopg.Cursor, dry_run: bool):
        self.cursor, self.dry_run = cursor, dry_run

    def write(self, statement: sql.Composable, params: Params = ()) -> int:
        """Run a write statement; return the rows it changed (or returned, with RETURNING)."""
        if self.dry_run:
            return 0
        self.cursor.execute(statement, params)
        return self.cursor.rowcount

    def write_returning(self, statement: sql.Composable, params: Params = ()) -> list[tuple]:
        """Run a write statement with RETURNING; return its rows (none in a dry run). With
        `ON CONFLICT DO NOTHING RETURNING`, what was inserted, told from what was already there."""
        if self.dry_run:
            return []
        self.cursor.execute(statement, params)
        return self.cursor.fetchall()

    def copy(self, statement: sql.Composable, rows: Iterable[Sequence[Any]]) -> int:
        """`COPY table (columns) FROM STDIN` the `rows`; return how many (0 in a dry run,
        which does not read them)."""
        if self.dry_run:
            return 0
        copied = 0
        with self.cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                copied += 1
        return copied

    def read(self, statement: sql.Composable, params: Params = ()) -> list[tuple]:
        self.cursor.execute(statement, params)
        return self.cursor.fetchall()


class Sink(Protocol):
    def transaction(self) -> Iterator[Transaction]:
        """Several statements in one transaction, committed at the end of the `with` block."""

    def scratch(self, table: TableName) -> sql.Identifier:
        """The name a scratch table has in this run: `table` itself, or in a dry run
        `pg_temp.<name>`, which only the dry run's own session can see or drop."""

    def scratch_transaction(self) -> Iterator[psycopg.Cursor]:
        """A transaction for statements that write only scratch tables named by `scratch` (and
        temporary tables): it runs in a dry run too."""

    def import_documents(self, documents: EncodedDocuments, action: str) -> ImportReport:
        """Bulk-import partial or whole documents; every result line read."""

    def add_index_fields(self, fields: list[dict[str, Any]]) -> None: ...

    def run_alone(self, statement: sql.Composable) -> None:
        """A statement that cannot run inside a transaction block (`CREATE INDEX CONCURRENTLY`,
        which builds an index without blocking the application's writes)."""

    def call(self, service: str, request: Callable[[], T]) -> T | None:
        """A request to an external provider that writes there or costs money (a paid
        embedding): made, except in a dry run without `--dry-run=calls`, which returns None."""


class LiveSink:
    def __init__(self, pg: Postgres, index: TypesenseIndex | None, before_write: Callable[[], None] = lambda: None):
        """`before_write` runs right before each write is made final (a commit, an import) and
        may refuse it by raising: a worker whose lease was taken over writes nothing more."""
        self._pg, self._index, self._before_write = pg, index, before_write

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.scratch_transaction() as cur:
            yield Transaction(cur, dry_run=False)

    def scratch(self, table: TableName) -> sql.Identifier:
        return sql.Identifier(table.schema, table.name)

    @contextmanager
    def scratch_transaction(self) -> Iterator[psycopg.Cursor]:
        conn = self._pg.connection()
        with conn.transaction(), conn.cursor() as cur:
            yield cur
            self._before_write()  # raising here rolls the transaction back

    def import_documents(self, documents: EncodedDocuments, action: str) -> ImportReport:
        self._before_write()
        return self._search_index.import_documents(documents, action)

    def add_index_fields(self, fields: list[dict[str, Any]]) -> None:
        self._before_write()
        self._search_index.add_fields(fields)

    def call(self, service: str, request: Callable[[], T]) -> T | None:
        self._before_write()
        return request()

    def run_alone(self, statement: sql.Composable) -> None:
        self._before_write()
        self._pg.connection().execute(statement)  # autocommit: no transaction block around it

    @property
    def _search_index(self) -> TypesenseIndex:
        if self._index is None:
            raise RuntimeError("the job writes to Typesense, but its `stores` do not include typesense")
        return self._index


class DryRunSink(LiveSink):
    """Counts what would be written; writes nothing to Postgres, Typesense or MongoDB. It keeps
    the live sink's `scratch_transaction`: those statements touch only `pg_temp`. Provider calls
    are made only when `calls` (`--dry-run=calls`)."""

    def __init__(self, pg: Postgres, index: TypesenseIndex | None, calls: bool = False):
        super().__init__(pg, index)
        self._calls = calls
        # The dry run's threads share its one session (its pg_temp tables are that session's):
        # one of them at a time has it, or their transactions would nest into each other.
        self._session = threading.RLock()
        #: Provider calls skipped, by service.
        self.skipped_calls: dict[str, int] = {}

    def run_alone(self, statement: sql.Composable) -> None:
        log.info("dry run: would run", statement=statement.as_string(self._pg.connection()))

    def call(self, service: str, request: Callable[[], T]) -> T | None:
        if self._calls:
            return request()
        self.skipped_calls[service] = self.skipped_calls.get(service, 0) + 1
        return None

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        # No transaction: its reads need none.
        with self._session, self._pg.connection().cursor() as cur:
            yield Transaction(cur, dry_run=True)

    @contextmanager
    def scratch_transaction(self) -> Iterator[psycopg.Cursor]:
        with self._session, super().scratch_transaction() as cur:
            yield cur

    def scratch(self, table: TableName) -> sql.Identifier:
        return sql.Identifier("pg_temp", table.name)

    def import_documents(self, documents: EncodedDocuments, action: str) -> ImportReport:
        if action != "update":
            return ImportReport(len(documents), [])
        existing = self._search_index.existing_ids(list(documents.ids))
        missing = [ImportFailure(i, 404, "not found (dry run)") for i in documents.ids if i not in existing]
        return ImportReport(len(documents) - len(missing), missing)

    def add_index_fields(self, fields: list[dict[str, Any]]) -> None:
        log.info("dry run: would add index fields", fields=[f["name"] for f in fields])
