"""The products phase: per batch of products, `deleted_at = 0` where NULL in Postgres, then
partial index updates `{id, created_at, deleted_at}`; a deleted product stays deleted in the index.

The application keeps writing while the job runs, so a document is rendered when the batch
writes, in the UPDATE's own transaction, never from the page fetched earlier: a product the
application deleted after the fetch is sent deleted. What remains is the moment between that
transaction's commit and the import (see the README): the reconcile phase closes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from psycopg import sql

from utils.keyset import Key, KeyKind, KeysetQuery
from utils.pg import ROW_ERRORS
from worker.job import BatchResult, Counters, JobContext, KeysetPhase, Page
from worker.jobs.inventory_fields.products_table import ProductsTable, read_results

# A page of products summed up by Postgres in one row: its size, last key and how many rows
# have NULL deleted_at. Read as rows, 1M products cost the worker 1.1 CPU s (a Python tuple per
# row); summed up, next to nothing.
_PAGE_SUMMARY = sql.SQL("SELECT count(*), {last_key}, count(*) FILTER (WHERE deleted_at IS NULL) FROM ({page}) p")


@dataclass(frozen=True)
class ProductsBatch:
    """Which products a batch writes: the key range (`after`, `last`] of a fetched page, or, for
    a part of a page split to isolate a bad row, exactly `keys`."""

    after: Key | None
    last: Key | None
    keys: list[Key] | None
    null_count: int

    @classmethod
    def of(cls, rows: Sequence[tuple]) -> "ProductsBatch":
        """The batch a page stands for, or a plain list of (key, deleted_at) rows."""
        if isinstance(rows, Page):
            return rows.summary
        return cls(None, None, [key for key, _ in rows], sum(1 for _, deleted_at in rows if deleted_at is None))

    def where(self) -> tuple[sql.Composable, tuple]:
        """The SQL condition selecting the batch's products, and its parameters."""
        if self.keys is not None:
            return sql.SQL("id = ANY(%s)"), (self.keys,)
        if self.after is None:
            return sql.SQL("id <= %s"), (self.last,)
        return sql.SQL("id > %s AND id <= %s"), (self.after, self.last)


class BackfillProducts(KeysetPhase):
    name = "products"
    scanned_counter = "rows_scanned"
    row_errors = (*ROW_ERRORS, OverflowError)

    def __init__(self, ctx: JobContext, products: ProductsTable):
        self.ctx, self.products = ctx, products
        self.batch_size = ctx.settings.batch_size
        self.query = KeysetQuery(products.identifier, "id", ("deleted_at",))

    @property
    def key_kind(self) -> KeyKind:
        return self.products.key_kind

    def prepare(self, resuming: bool) -> None:
        self.products.check()

    def count(self) -> int:
        return self.products.count()

    def fetch(self, after: Key | None, limit: int) -> Sequence[tuple]:
        statement = _PAGE_SUMMARY.format(
            last_key=self.key_kind.greatest_sql(sql.Identifier("id")), page=self.query.statement(after is not None)
        )
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(statement, self.query.params(after, limit))
            size, last_key, null_count = cur.fetchone()
        return Page(
            size, last_key, ProductsBatch(after, last_key, None, null_count),
            rows=lambda: self.query.span(self.ctx.pg.connection(), after, last_key),
        )

    def fetch_keys(self, keys: Sequence[Key]) -> Sequence[tuple]:
        return self.query.by_keys(self.ctx.pg.connection(), keys)

    def tally(self, rows: Sequence[tuple]) -> Counters:
        return {"pg_rows_updated": ProductsBatch.of(rows).null_count}

    def process(self, rows: Sequence[tuple]) -> BatchResult:
        """One transaction sets NULL deleted_at to 0 and renders the documents from the rows as
        they then stand; the import follows its commit. A retry does both again."""
        where, params = ProductsBatch.of(rows).where()
        with self.ctx.sink.transaction() as tx:
            self.products.set_null_deleted_at(tx, where, params)
            documents = self.products.render_documents(tx, where, params)
        return read_results(self.ctx.sink.import_documents(documents, "update"), updated="index_docs_updated")
