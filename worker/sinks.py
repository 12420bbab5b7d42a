"""Where a job's writes go: the real servers, or nowhere (dry run).

Dry-run lives here and only here, so neither the engine nor a job needs `if dry_run:` around
each write. The dry-run sink still reads, so its report is real: an index update of a document
that does not exist is reported as the 404 the real import would have answered.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import structlog
from psycopg import sql
from pymongo.collection import Collection

from utils.pg import Postgres
from utils.typesense import ImportResult, TypesenseIndex
from worker.checkpoint import utcnow

log = structlog.get_logger("worker.sink")


class Sink(Protocol):
    def execute(self, statement: sql.Composable, params: Sequence[Any]) -> int:
        """Run one write statement in its own transaction; return the rows it changed."""

    def import_documents(self, documents: list[dict[str, Any]], action: str) -> list[ImportResult]:
        """Bulk-import partial or whole documents; one result per document."""

    def add_index_fields(self, fields: list[dict[str, Any]]) -> None: ...

    def record_failure(self, job: str, phase: str, key: str, error: str, code: int | None) -> None:
        """Keep a row or document that could not be written, so it is never silently dropped."""


class LiveSink:
    def __init__(self, pg: Postgres, index: TypesenseIndex, failures: Collection):
        self._pg, self._index, self._failures = pg, index, failures

    def execute(self, statement: sql.Composable, params: Sequence[Any]) -> int:
        conn = self._pg.connection()
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.rowcount

    def import_documents(self, documents: list[dict[str, Any]], action: str) -> list[ImportResult]:
        return self._index.import_documents(documents, action)

    def add_index_fields(self, fields: list[dict[str, Any]]) -> None:
        self._index.add_fields(fields)

    def record_failure(self, job: str, phase: str, key: str, error: str, code: int | None) -> None:
        now = utcnow()
        self._failures.update_one(
            {"_id": f"{job}:{phase}:{key}"},
            {
                "$set": {"job": job, "phase": phase, "key": key, "error": error, "code": code, "last_seen": now},
                "$setOnInsert": {"first_seen": now},
                "$inc": {"attempts": 1},
            },
            upsert=True,
        )


class DryRunSink:
    """Counts what would be written; writes nothing to Postgres, Typesense or MongoDB."""

    def __init__(self, index: TypesenseIndex):
        self._index = index
        self.failures: list[dict[str, Any]] = []

    def execute(self, statement: sql.Composable, params: Sequence[Any]) -> int:
        return 0

    def import_documents(self, documents: list[dict[str, Any]], action: str) -> list[ImportResult]:
        if action != "update":
            return [ImportResult(id=str(d["id"]), success=True) for d in documents]
        existing = self._index.existing_ids([str(d["id"]) for d in documents])
        return [
            ImportResult(id=str(d["id"]), success=True)
            if str(d["id"]) in existing
            else ImportResult(id=str(d["id"]), success=False, code=404, error="not found (dry run)")
            for d in documents
        ]

    def add_index_fields(self, fields: list[dict[str, Any]]) -> None:
        log.info("dry run: would add index fields", fields=[f["name"] for f in fields])

    def record_failure(self, job: str, phase: str, key: str, error: str, code: int | None) -> None:
        self.failures.append({"job": job, "phase": phase, "key": key, "error": error, "code": code})

