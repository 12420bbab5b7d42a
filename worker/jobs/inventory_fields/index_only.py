"""The index_only phase: documents with no product row get `created_at = 0` / `deleted_at = 0`
where they lack them (values they have are kept)."""

from __future__ import annotations

import threading
from typing import Sequence

from psycopg import sql

from utils.keyset import Key, KeyKind, KeysetQuery
from utils.typesense import EncodedDocuments
from worker.job import BatchResult, Counters, JobContext, KeysetPhase
from worker.jobs.inventory_fields.index_snapshot import IndexSnapshot
from worker.jobs.inventory_fields.products_table import EXPORT_FIELDS, NEW_FIELDS, ProductsTable, read_results


class DefaultIndexOnly(KeysetPhase):
    name = "index_only"
    scanned_counter = "index_docs_scanned"
    # The phases before never write an index-only document (ensure_schema adds fields to the
    # schema; products writes product documents, whose exported values go unused), so the
    # snapshot is loaded from the index from the job's start, alongside them.
    prepare_early = True

    def __init__(self, ctx: JobContext, products: ProductsTable, export_started: threading.Event | None = None):
        self.ctx, self.products = ctx, products
        self.batch_size = ctx.job_settings.typesense_page_size
        self.snapshot = IndexSnapshot(ctx, products, "doc_id", export_started)
        self.query = KeysetQuery(self.snapshot.table, "doc_id", ("key", *NEW_FIELDS))

    @property
    def export_started(self) -> threading.Event:
        """Set once the export streams, or once `prepare` ends without one (see EnsureSchema)."""
        return self.snapshot.started

    @property
    def key_kind(self) -> KeyKind:
        return KeyKind.TEXT

    def prepare(self, resuming: bool) -> None:
        try:
            if not (resuming and self.snapshot.exists()):
                self.snapshot.load()
        finally:
            self.export_started.set()

    def count(self) -> int:
        return self.snapshot.count()

    def fetch(self, after: Key | None, limit: int) -> Sequence[tuple]:
        # A LATERAL lookup with LIMIT is one index probe per document whatever the statistics
        # say; a plain LEFT JOIN was planned, on some runs, as a full scan of products per page.
        statement = sql.SQL(
            "SELECT s.doc_id, s.created_at, s.deleted_at, p.found IS NULL FROM ({page}) s"
            " LEFT JOIN LATERAL (SELECT true AS found FROM {products} WHERE id = s.key LIMIT 1) p ON true"
            " ORDER BY s.doc_id"
        ).format(page=self.query.statement(after is not None), products=self.products.identifier)
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(statement, self.query.params(after, limit))
            return cur.fetchall()

    def fetch_keys(self, keys: Sequence[Key]) -> Sequence[tuple]:
        """From the index itself: the snapshot is gone once the phase has finished."""
        found = {d["id"]: d for d in self.ctx.index.export_by_ids([str(k) for k in keys], EXPORT_FIELDS)}
        in_products = self.products.existing_keys(found)
        return [
            (doc_id, found[doc_id].get("created_at"), found[doc_id].get("deleted_at"), doc_id not in in_products)
            for doc_id in sorted(found)
        ]

    def tally(self, rows: Sequence[tuple]) -> Counters:
        orphans = [row for row in rows if row[3]]
        return {"index_only_already_set": sum(1 for row in orphans if not _defaults_patch(row))}

    def process(self, rows: Sequence[tuple]) -> BatchResult:
        documents = EncodedDocuments.from_dicts(
            {"id": row[0], **patch} for row in rows if row[3] and (patch := _defaults_patch(row))
        )
        return read_results(self.ctx.sink.import_documents(documents, "update"), updated="index_only_defaulted")

    def finish(self) -> None:
        self.snapshot.drop()


def _defaults_patch(row: tuple) -> dict[str, int]:
    """The fields an index-only document lacks, each set to 0 (values it has are kept)."""
    _, created_at, deleted_at, _ = row
    return {name: 0 for name, value in zip(NEW_FIELDS, (created_at, deleted_at)) if value is None}
