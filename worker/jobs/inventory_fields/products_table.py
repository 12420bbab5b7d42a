"""The products table as every phase of the job sees it: its name and key, its checks, and the
one SQL rendering of a product's partial index document, used wherever a document is sent."""

from __future__ import annotations

from typing import Sequence

from psycopg import sql

from utils.keyset import KeyKind, KeysetQuery
from utils.typesense import EncodedDocuments, ImportReport
from worker.exceptions import SchemaMismatch
from worker.job import BatchResult, Failure, JobContext
from worker.tables import missing_tables
from worker.sinks import Transaction

NEW_FIELDS = ("created_at", "deleted_at")
#: What the job reads of each index document (`include_fields` of an export).
EXPORT_FIELDS = ",".join(("id", *NEW_FIELDS))
_TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone")
_INTEGER_TYPES = ("smallint", "integer", "bigint")


def unix_seconds(created_at: sql.Composable) -> sql.Composed:
    """created_at as the index holds it: whole unix seconds (truncated, like int(timestamp())),
    NULL as 0. An 'infinity' timestamp has no unix time: it is 0 here, but `render_documents`
    refuses it."""
    return sql.SQL("CASE WHEN isfinite({c}) THEN trunc(extract(epoch FROM {c}))::bigint ELSE 0 END").format(c=created_at)

# The partial index document, rendered by Postgres: the worker sends it as it comes, with no
# Python object per field. Concatenated, with to_json escaping the id: json_build_object took 1.5
# Postgres CPU s per million rows, this 1.0 s (the values are never NULL, and the numbers need
# no escaping).
_PARTIAL_DOCUMENT = sql.SQL(
    "concat('{{\"id\":', to_json(id::text), ',\"created_at\":', {created}, ',\"deleted_at\":', coalesce(deleted_at, 0), '}}')"
).format(created=unix_seconds(sql.Identifier("created_at")))
_RENDER = sql.SQL(
    "SELECT count(*), (array_agg(id) FILTER (WHERE NOT (created_at IS NULL OR isfinite(created_at))))[1],"
    " string_agg({document}, E'\\n') FROM {table} WHERE {where}"
)


class ProductsTable:
    """The products table's name and key type, checked once against the catalog."""

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self.schema, self.name = ctx.job_settings.products_table.schema, ctx.job_settings.products_table.name
        self.identifier = sql.Identifier(self.schema, self.name)
        self._key_kind: KeyKind | None = None

    @property
    def key_kind(self) -> KeyKind:
        if self._key_kind is None:
            self._key_kind = self.check()
        return self._key_kind

    def check(self) -> KeyKind:
        """The key's kind; SchemaMismatch when the table or a column is missing or mistyped."""
        table = f"{self.schema}.{self.name}"
        columns = self.ctx.pg.column_types(self.schema, self.name)
        if not columns:
            raise SchemaMismatch(missing_tables([table], "inventory_fields", "its products table", "PRODUCTS_TABLE"))
        for column, allowed in (("created_at", _TIMESTAMP_TYPES), ("deleted_at", _INTEGER_TYPES)):
            if columns.get(column) not in allowed:
                found = columns.get(column, "missing")
                raise SchemaMismatch(f"{table}.{column} must be one of {', '.join(allowed)}; found {found}")
        if "id" not in columns:
            raise SchemaMismatch(f"table {table} has no id column")
        try:
            return KeyKind.from_pg_type(columns["id"])
        except ValueError as error:
            raise SchemaMismatch(f"{table}.id: {error}") from None

    def existing_keys(self, doc_ids: Sequence[str]) -> set[str]:
        """Which document ids have a product row."""
        kind = self.key_kind
        keys = [k for k in (kind.parse_document_id(i) for i in doc_ids) if k is not None]
        rows = KeysetQuery(self.identifier, "id", ()).by_keys(self.ctx.pg.connection(), keys)
        return {str(k) for (k,) in rows}

    def count(self) -> int:
        return count_rows(self.ctx, self.identifier)

    def set_null_deleted_at(self, tx: Transaction, where: sql.Composable, params: Sequence) -> int:
        """`deleted_at = 0` for the products `where` selects whose `deleted_at` is NULL, and
        only those: a product the application deleted meanwhile keeps its timestamp."""
        statement = sql.SQL("UPDATE {} SET deleted_at = 0 WHERE {} AND deleted_at IS NULL").format(self.identifier, where)
        return tx.write(statement, params)

    def render_documents(self, tx: Transaction, where: sql.Composable, params: Sequence) -> EncodedDocuments:
        """The partial documents of the products `where` selects, as they stand in `tx` now:
        read at write time, after the transaction's own updates, never from an earlier page.
        Raises OverflowError for an 'infinity' created_at, which has no unix time: the engine
        splits the batch until that row stands alone and records it as a failure."""
        statement = _RENDER.format(document=_PARTIAL_DOCUMENT, table=self.identifier, where=where)
        [(size, unusable_key, body)] = tx.read(statement, params)
        if unusable_key is not None:
            raise OverflowError(f"created_at of {unusable_key} is infinite: it has no unix time")
        return EncodedDocuments(body or "", size)


def count_rows(ctx: JobContext, table: sql.Composable) -> int:
    with ctx.pg.connection().cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
        return int(cur.fetchone()[0])


def read_results(report: ImportReport, updated: str, missing: str | None = "missing_in_index") -> BatchResult:
    """404 means the document is not in the index (counted as `missing`, if named); any other
    refusal is returned with its id and error, for the engine to record."""
    counters = {updated: report.succeeded}
    if missing:
        counters[missing] = sum(1 for f in report.failed if f.code == 404)
    failures = [Failure(key=f.id, error=f.error, code=f.code) for f in report.failed if f.code != 404]
    return BatchResult(counters, failures)
