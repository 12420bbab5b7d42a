"""Where a job's writes go: the real servers, or nowhere (dry run).

Dry-run lives here and only here, so neither the engine nor a job needs `if dry_run:` around
each write. The dry-run sink still reads, so its report is real: an index update of a document
that does not exist is reported as the 404 the real import would have answered.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import structlog
from psycopg import sql

from utils.pg import Postgres
from utils.typesense import EncodedDocuments, ImportFailure, ImportReport, TypesenseIndex

log = structlog.get_logger("worker.sink")


class Sink(Protocol):
    def execute(self, statement: sql.Composable, params: Sequence[Any]) -> int:
        """Run one write statement in its own transaction; return the rows it changed."""

    def import_documents(self, documents: EncodedDocuments, action: str) -> ImportReport:
        """Bulk-import partial or whole documents; every result line read."""

    def add_index_fields(self, fields: list[dict[str, Any]]) -> None: ...


class LiveSink:
    def __init__(self, pg: Postgres, index: TypesenseIndex):
        self._pg, self._index = pg, index

    def execute(self, statement: sql.Composable, params: Sequence[Any]) -> int:
        conn = self._pg.connection()
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.rowcount

    def import_documents(self, documents: EncodedDocuments, action: str) -> ImportReport:
        return self._index.import_documents(documents, action)

    def add_index_fields(self, fields: list[dict[str, Any]]) -> None:
        self._index.add_fields(fields)


class DryRunSink:
    """Counts what would be written; writes nothing to Postgres, Typesense or MongoDB."""

    def __init__(self, index: TypesenseIndex):
        self._index = index

    def execute(self, statement: sql.Composable, params: Sequence[Any]) -> int:
        return 0

    def import_documents(self, documents: EncodedDocuments, action: str) -> ImportReport:
        if action != "update":
            return ImportReport(len(documents), [])
        existing = self._index.existing_ids(list(documents.ids))
        missing = [ImportFailure(i, 404, "not found (dry run)") for i in documents.ids if i not in existing]
        return ImportReport(len(documents) - len(missing), missing)

    def add_index_fields(self, fields: list[dict[str, Any]]) -> None:
        log.info("dry run: would add index fields", fields=[f["name"] for f in fields])
