"""The reconcile phase: the index and Postgres compared in SQL, and every difference repaired with
Postgres as the truth, because the application wrote while the job ran.

Each walk (pass) takes a fresh snapshot of the index (`IndexSnapshot`, indexed by the product key
each document id stands for) and walks the products table in key order, one key range at a time,
so it resumes like any phase. Per range, Postgres joins the products with the documents of the
same keys (a FULL JOIN of two index range scans: no lookup per row) and classifies each entry:

- `pg_deleted_at_null`: a product with NULL `deleted_at`, anywhere in the table (a row the
  application inserted behind the products phase's cursor, say): set to 0;
- `document_differs`: a product's document whose `created_at` / `deleted_at` differ from the
  row's: rendered again from the row as it stands at write time and re-sent;
- `index_only_without_defaults`: a document with no product row that lacks a field: 0.

Documents whose ids no product could have (`key` NULL) are compared in the first range, the
documents past the last product in the last. The engine walks again while a walk repaired
anything, up to RECONCILE_MAX_PASSES. `verify` runs the same comparison read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from psycopg import sql

from utils.keyset import Key, KeyKind
from utils.pg import ROW_ERRORS
from utils.typesense import EncodedDocuments
from worker.job import BatchResult, Counters, Differences, JobContext, KeysetPhase, Page
from worker.jobs.inventory_fields.index_snapshot import IndexSnapshot
from worker.jobs.inventory_fields.products_table import EXPORT_FIELDS, NEW_FIELDS, ProductsTable, read_results, unix_seconds

KINDS = ("pg_deleted_at_null", "document_differs", "index_only_without_defaults")
# How far the page of products reaches: its size and last key.
_BOUNDS = sql.SQL("SELECT count(*), {last} FROM (SELECT id FROM {products}{where} ORDER BY id LIMIT %s) p")
# One row per entry (a product, a document, or a product and its document), classified:
# (entry, key, pg_null, kind, patch, weight). `entry` is the document id, or the key's text for
# a product without one; `weight` counts the products and documents it stands for. `known`
# entries (recorded failures, listed by `failures` and retried by `retry`) are walked but not
# repaired again. `patch` is an index-only document's missing fields, as 0.
_ROWS = sql.SQL(
    "SELECT entry, key, pg_null, kind, CASE WHEN kind = 'defaults' THEN concat('{{\"id\":', to_json(entry),"
    "  CASE WHEN doc_created IS NULL THEN ',\"created_at\":0' END, CASE WHEN doc_deleted IS NULL THEN ',\"deleted_at\":0' END,"
    "  '}}') END AS patch, weight FROM ("
    " SELECT entry, key, has_row AND row_deleted IS NULL AND NOT known AS pg_null,"
    "  CASE WHEN known OR NOT has_doc THEN NULL"
    "   WHEN NOT has_row THEN CASE WHEN doc_created IS NULL OR doc_deleted IS NULL THEN 'defaults' END"
    "   WHEN doc_created IS DISTINCT FROM row_created OR doc_deleted IS DISTINCT FROM coalesce(row_deleted, 0) THEN 'stale'"
    "  END AS kind, doc_created, doc_deleted, has_row::int + has_doc::int AS weight FROM ("
    "  SELECT j.*, entry = ANY(%s) AS known FROM ("
    "   SELECT coalesce(s.doc_id, p.id::text) AS entry, coalesce(p.id, s.key) AS key,"
    "    p.id IS NOT NULL AS has_row, p.deleted_at AS row_deleted, {row_created} AS row_created,"
    "    s.doc_id IS NOT NULL AS has_doc, s.created_at AS doc_created, s.deleted_at AS doc_deleted"
    "   FROM (SELECT id, created_at, deleted_at FROM {products}{p_where}) p"
    "   FULL JOIN ({documents}) s ON s.key = p.id) j) c) r"
)
# The same rows summed up in one: the worker gets only what differs.
_SUMMARY = sql.SQL(
    "SELECT coalesce(sum(weight), 0), {last}, array_agg(key) FILTER (WHERE pg_null),"
    " array_agg(key) FILTER (WHERE kind = 'stale'), array_agg(entry) FILTER (WHERE kind = 'defaults'),"
    " string_agg(patch, E'\\n') FILTER (WHERE kind = 'defaults') FROM ({rows}) r"
)


@dataclass
class ReconcileBatch:
    """What differs in a page: products to set to 0, products whose documents to re-send, and
    index-only documents' patches."""

    null_keys: list[Key]
    stale_keys: list[Key]
    defaults_ids: list[str]
    defaults: EncodedDocuments

    @classmethod
    def of(cls, rows: Sequence[tuple]) -> "ReconcileBatch":
        """The batch a page stands for, or a plain list of classified rows (see _ROWS)."""
        if isinstance(rows, Page):
            return rows.summary
        defaults = [row for row in rows if row[3] == "defaults"]
        return cls(
            [row[1] for row in rows if row[2]],
            [row[1] for row in rows if row[3] == "stale"],
            [row[0] for row in defaults],
            EncodedDocuments.from_lines([row[4] for row in defaults]),
        )

    def add_to(self, found: Differences) -> None:
        found.add(KINDS[0], [str(k) for k in self.null_keys])
        found.add(KINDS[1], [str(k) for k in self.stale_keys])
        found.add(KINDS[2], self.defaults_ids)


class Reconcile(KeysetPhase):
    name = "reconcile"
    passes_counter = "reconcile_passes"
    row_errors = (*ROW_ERRORS, OverflowError)

    def __init__(self, ctx: JobContext, products: ProductsTable, job: str, skip_recorded_failures: bool = True):
        self.ctx, self.products, self.job = ctx, products, job
        self.skip_recorded_failures = skip_recorded_failures
        # Pages are cheap (Postgres sums each up, and few entries differ): start at the largest.
        self.batch_size = ctx.settings.batch_size_max
        self.max_passes = ctx.job_settings.reconcile_max_passes
        self.snapshot = IndexSnapshot(ctx, products, index_on="key")
        self.known: list[str] = []

    @property
    def key_kind(self) -> KeyKind:
        return self.products.key_kind

    def prepare(self, resuming: bool) -> None:
        if self.skip_recorded_failures and self.ctx.failures is not None:
            self.known = [f["key"] for f in self.ctx.failures.list(self.job)]
        if not (resuming and self.snapshot.exists()):
            self.snapshot.load()

    def count(self) -> int:
        """Products and documents: a page's size is the number of each it compares."""
        return self.products.count() + self.snapshot.count()

    def fetch(self, after: Key | None, limit: int) -> Sequence[tuple]:
        size, last = self._bounds(after, limit)
        final = size < limit  # the last range reaches past the last product, to every document
        p_where, p_params = _range("id", after, None if final else last)
        s_where, s_params = _range("key", after, None if final else last, with_null=after is None)
        documents = sql.SQL("SELECT doc_id, key, created_at, deleted_at FROM {}{}").format(self.snapshot.table, s_where)
        rows = self._rows(p_where, documents)
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(
                _SUMMARY.format(last=self.key_kind.greatest_sql(sql.Identifier("key")), rows=rows),
                (self.known, *p_params, *s_params),
            )
            weight, last_key, null_keys, stale_keys, defaults_ids, defaults = cur.fetchone()
        defaults_ids = defaults_ids or []
        batch = ReconcileBatch(null_keys or [], stale_keys or [], defaults_ids, EncodedDocuments(defaults or "", len(defaults_ids)))
        ordered = rows + sql.SQL(" ORDER BY entry")
        return Page(
            weight, last_key if last_key is not None else after, batch, final=final,
            rows=lambda: self._read(ordered, (self.known, *p_params, *s_params)),
        )

    def _bounds(self, after: Key | None, limit: int) -> tuple[int, Key | None]:
        where, params = _range("id", after, None)
        statement = _BOUNDS.format(
            last=self.key_kind.greatest_sql(sql.Identifier("id")), products=self.products.identifier, where=where
        )
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(statement, (*params, limit))
            size, last = cur.fetchone()
        return size, last

    def _rows(self, p_where: sql.Composable, documents: sql.Composable) -> sql.Composed:
        return _ROWS.format(
            row_created=unix_seconds(sql.SQL("p.created_at")), products=self.products.identifier,
            p_where=p_where, documents=documents,
        )

    def _read(self, statement: sql.Composable, params: Sequence) -> list[tuple]:
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()

    def fetch_keys(self, keys: Sequence[Key]) -> Sequence[tuple]:
        """These entries compared afresh (to retry recorded failures): the documents from the
        index itself, the snapshot being gone once the phase has finished."""
        ids = [str(k) for k in keys]
        found = list(self.ctx.index.export_by_ids(ids, EXPORT_FIELDS))
        product_keys = [k for k in map(self.key_kind.parse_document_id, ids) if k is not None]
        documents = sql.SQL(
            "SELECT v.doc_id, {key} AS key, v.created_at, v.deleted_at"
            " FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) v(doc_id, created_at, deleted_at)"
        ).format(key=self.key_kind.document_key_sql(sql.SQL("v.doc_id")))
        columns = [[d["id"] for d in found], *([d.get(f) for d in found] for f in NEW_FIELDS)]
        statement = self._rows(sql.SQL(" WHERE id = ANY(%s)"), documents) + sql.SQL(" ORDER BY entry")
        return self._read(statement, ([], product_keys, *columns))

    def tally(self, rows: Sequence[tuple]) -> Counters:
        return {"reconciled_pg_rows": len(ReconcileBatch.of(rows).null_keys)}

    def process(self, rows: Sequence[tuple]) -> BatchResult:
        """Postgres first, then the documents rendered in that same transaction, as in the
        products phase; a document gone from the index meanwhile needs nothing."""
        batch = ReconcileBatch.of(rows)
        stale = EncodedDocuments("", 0)
        with self.ctx.sink.transaction() as tx:
            if batch.null_keys:
                self.products.set_null_deleted_at(tx, sql.SQL("id = ANY(%s)"), (batch.null_keys,))
            if batch.stale_keys:
                stale = self.products.render_documents(tx, sql.SQL("id = ANY(%s)"), (batch.stale_keys,))
        documents = EncodedDocuments("\n".join(d.body for d in (stale, batch.defaults) if d.count), stale.count + batch.defaults.count)
        return read_results(self.ctx.sink.import_documents(documents, "update"), updated="reconciled_documents", missing=None)

    def finish(self) -> None:
        self.snapshot.drop()

    def differences(self, walked: Counters) -> int:
        return sum(walked.get(name, 0) for name in ("reconciled_pg_rows", "reconciled_documents", "failures"))

    def compare(self) -> Differences:
        """The comparison alone, read-only (`verify`): in a dry run's context, the snapshot is
        a temporary table and nothing is written."""
        found = Differences(KINDS)
        self.prepare(False)
        try:
            after = None
            while True:
                page = self.fetch(after, self.batch_size)
                ReconcileBatch.of(page).add_to(found)
                if page.final:
                    return found
                after = page.last_key
        finally:
            self.finish()


def _range(column: str, after: Key | None, last: Key | None, with_null: bool = False) -> tuple[sql.Composable, tuple]:
    """` WHERE after < column <= last` (either bound may be absent), `OR column IS NULL` if asked."""
    bounds, params = [], []
    if after is not None:
        bounds.append(sql.SQL("{} > %s").format(sql.Identifier(column)))
        params.append(after)
    if last is not None:
        bounds.append(sql.SQL("{} <= %s").format(sql.Identifier(column)))
        params.append(last)
    if not bounds:
        return sql.SQL(""), ()
    condition = sql.SQL(" AND ").join(bounds)
    if with_null:
        condition = sql.SQL("({}) OR {} IS NULL").format(condition, sql.Identifier(column))
    return sql.SQL(" WHERE ") + condition, tuple(params)
