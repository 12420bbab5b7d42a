"""Inventory fields backfill (seed 004): `deleted_at` and `created_at` in Postgres and Typesense.

After it, `deleted_at` is 0 (active) or a deletion timestamp everywhere, never NULL, so
`deleted_at < 1` is the one filter in both stores; every index document has `created_at`
(unix seconds from Postgres, or 0 for documents with no product row).

Phases:
1. `ensure_schema` - add `created_at` / `deleted_at` (int64) to the collection if missing.
2. `products` - per batch of products: `deleted_at = 0` where NULL in Postgres, then partial
   index updates `{id, created_at, deleted_at}`; a deleted product stays deleted in the index.
3. `index_only` - documents with no product row get `created_at = 0` / `deleted_at = 0` where
   they lack them. The index's ids are streamed once into a scratch table and walked by keyset,
   because search pages shift as documents change and cannot be resumed exactly.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from psycopg import sql

from utils.keyset import Key, KeyKind, KeysetQuery
from utils.pg import ROW_ERRORS
from utils.typesense import EncodedDocuments, ImportReport, ObjectNotFound
from worker.exceptions import SchemaMismatch
from worker.job import BatchResult, Counters, Failure, Job, JobContext, KeysetPhase, Phase, Step

NEW_FIELDS = ("created_at", "deleted_at")
_TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone")
_INTEGER_TYPES = ("smallint", "integer", "bigint")
# The partial index document, rendered by Postgres: the worker sends it as it comes, with no
# Python object per field. created_at in whole unix seconds (truncated, like int(timestamp()));
# NULL becomes 0. An 'infinity' timestamp has no unix time: it is rendered as 0 but flagged by
# the column before, so `process` refuses that row alone (see BackfillProducts.process).
# Concatenated, with to_json escaping the id: json_build_object took 1.5 Postgres CPU s per
# million rows, this 1.0 s (the values are never NULL, and the numbers need no escaping).
_PARTIAL_DOCUMENT = sql.SQL(
    "concat('{\"id\":', to_json(id::text),"
    " ',\"created_at\":', CASE WHEN isfinite(created_at) THEN trunc(extract(epoch FROM created_at))::bigint ELSE 0 END,"
    " ',\"deleted_at\":', coalesce(deleted_at, 0), '}') AS document"
)
_CREATED_AT_USABLE = sql.SQL("(created_at IS NULL OR isfinite(created_at)) AS usable")
# A page of products summed up by Postgres in one row: the import's body, the keys whose
# deleted_at is NULL (an array literal the UPDATE takes back as it is), counts and the last key.
# Read as rows, 1M products cost the worker 1.1 CPU s (a Python tuple per row, a list of keys
# dumped again for the UPDATE); summed up, 0.07 s, and Postgres 0.85 s instead of 1.0 s. The
# order of the body's lines does not matter: a refused document is named from its own line.
_PAGE_SUMMARY = sql.SQL(
    "SELECT count(*), {last_key}, count(*) FILTER (WHERE deleted_at IS NULL),"
    " (array_agg(id) FILTER (WHERE deleted_at IS NULL))::text,"
    " (array_agg(id) FILTER (WHERE NOT usable))[1], string_agg(document, E'\\n') FROM ({page}) p"
)
# COPY as CSV with control characters for quote and delimiter: JSON never holds them unescaped,
# so each line of an export arrives whole in one jsonb column, parsed by Postgres.
_COPY_JSON_LINES = sql.SQL("COPY {} (doc) FROM STDIN (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')")


class InventoryFieldsJob(Job):
    name = "inventory_fields"
    checkpoint_id = "backfill_inventory_fields"

    def phases(self) -> Sequence[Phase]:
        products = ProductsTable(self.ctx)
        export_started = threading.Event()
        return (
            EnsureSchema(self.ctx, export_started),
            BackfillProducts(self.ctx, products),
            DefaultIndexOnly(self.ctx, products, export_started),
        )

    def check(self) -> None:
        ProductsTable(self.ctx).check()
        EnsureSchema(self.ctx).missing_fields()


class ProductsTable:
    """The products table's name and key type, checked once against the catalog."""

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self.schema, self.name = ctx.settings.products_table.schema, ctx.settings.products_table.name
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
            raise SchemaMismatch(f"table {table} does not exist (PRODUCTS_TABLE)")
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


class EnsureSchema(Step):
    """Typesense holds an export back until a schema change has finished (about 2 s per million
    documents), while a change sent once an export is streaming runs alongside it. So, given the
    index_only phase's `export_started`, the change waits (up to `export_wait_seconds`) for that
    early export to stream first: it then reads the index while the schema changes, instead of
    after, when it would compete with the products phase for the servers' CPU."""

    name = "ensure_schema"
    export_wait_seconds = 10.0

    def __init__(self, ctx: JobContext, export_started: threading.Event | None = None):
        self.ctx, self.export_started = ctx, export_started

    def missing_fields(self) -> list[dict[str, Any]]:
        try:
            fields = {f["name"]: f for f in self.ctx.index.schema()["fields"]}
        except ObjectNotFound:
            raise SchemaMismatch(
                f"Typesense collection {self.ctx.index.collection!r} does not exist (TYPESENSE_COLLECTION)"
            ) from None
        missing = []
        for name in NEW_FIELDS:
            if name not in fields:
                missing.append({"name": name, "type": "int64", "optional": True})
            elif fields[name]["type"] != "int64":
                raise SchemaMismatch(
                    f"collection {self.ctx.index.collection!r} field {name} is {fields[name]['type']}, expected int64"
                )
        return missing

    def tally(self) -> Counters:
        return {"index_fields_added": len(self.missing_fields())}

    def run(self) -> Counters:
        missing = self.missing_fields()
        if missing:
            self._let_the_export_start()
            self.ctx.sink.add_index_fields(missing)
        return {}

    def _let_the_export_start(self) -> None:
        if self.export_started is not None:
            # A stop ends the early prepare, which sets the event: no wait outlasts a stop.
            self.export_started.wait(self.export_wait_seconds)
            self.ctx.stop.sleep(0)


class BackfillProducts(KeysetPhase):
    name = "products"
    scanned_counter = "rows_scanned"
    row_errors = (*ROW_ERRORS, OverflowError)

    def __init__(self, ctx: JobContext, products: ProductsTable):
        self.ctx, self.products = ctx, products
        self.batch_size = ctx.settings.batch_size
        self.query = KeysetQuery(products.identifier, "id", ("deleted_at", _CREATED_AT_USABLE, _PARTIAL_DOCUMENT))

    @property
    def key_kind(self) -> KeyKind:
        return self.products.key_kind

    def prepare(self, resuming: bool) -> None:
        self.products.check()

    def count(self) -> int:
        return _count(self.ctx, self.products.identifier)

    def fetch(self, after: Key | None, limit: int) -> Sequence[tuple]:
        statement = _PAGE_SUMMARY.format(
            last_key=self.key_kind.greatest_sql(sql.Identifier("id")), page=self.query.statement(after is not None)
        )
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(statement, self.query.params(after, limit))
            size, last_key, null_count, null_keys, unusable_key, body = cur.fetchone()
        return ProductsPage(
            size, last_key, null_count, null_keys, unusable_key, EncodedDocuments(body or "", size),
            rows=lambda: self.query.span(self.ctx.pg.connection(), after, last_key),
        )

    def fetch_keys(self, keys: Sequence[Key]) -> Sequence[tuple]:
        return self.query.by_keys(self.ctx.pg.connection(), keys)

    def last_key(self, rows: Sequence[tuple]) -> Key:
        return rows.last_key if isinstance(rows, ProductsPage) else super().last_key(rows)

    def tally(self, rows: Sequence[tuple]) -> Counters:
        return {"pg_rows_updated": ProductsPage.of(rows).null_count}

    def process(self, rows: Sequence[tuple]) -> BatchResult:
        """Raises OverflowError for a batch holding an 'infinity' created_at: the engine splits
        the batch until that row stands alone and records it as a failure."""
        page = ProductsPage.of(rows)
        if page.unusable_key is not None:
            raise OverflowError(f"created_at of {page.unusable_key} is infinite: it has no unix time")
        if page.null_keys:
            self.ctx.sink.execute(
                sql.SQL("UPDATE {} SET deleted_at = 0 WHERE id = ANY(%s) AND deleted_at IS NULL").format(
                    self.products.identifier
                ),
                (page.null_keys,),
            )
        return _read_results(self.ctx.sink.import_documents(page.documents, "update"), updated="index_docs_updated")


class ProductsPage(Sequence[tuple]):
    """A batch of products as the products phase writes it. Fetched pages arrive summed up by
    Postgres (see _PAGE_SUMMARY); the rows (key, deleted_at, usable, document) are read only if
    the engine splits the batch to isolate a bad row, or come from `of` for such a part."""

    def __init__(
        self,
        size: int,
        last_key: Key | None,
        null_count: int,
        null_keys: str | list[Key] | None,
        unusable_key: Key | None,
        documents: EncodedDocuments,
        rows: Callable[[], Sequence[tuple]],
    ):
        self.size, self.last_key, self.null_count, self.null_keys = size, last_key, null_count, null_keys
        self.unusable_key, self.documents = unusable_key, documents
        self._read_rows = rows
        self._rows: Sequence[tuple] | None = None

    @classmethod
    def of(cls, rows: Sequence[tuple]) -> "ProductsPage":
        if isinstance(rows, ProductsPage):
            return rows
        # Columns, not rows: one pass in C instead of a Python tuple unpacking per row and use.
        keys, deleted_ats, usable, lines = zip(*rows) if rows else ((), (), (), ())
        null_keys = [key for key, deleted_at in zip(keys, deleted_ats) if deleted_at is None]
        unusable_key = keys[usable.index(False)] if not all(usable) else None
        last_key = keys[-1] if keys else None
        documents = EncodedDocuments.from_lines(lines)
        return cls(len(rows), last_key, len(null_keys), null_keys, unusable_key, documents, rows=lambda: rows)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):  # type: ignore[no-untyped-def]  # Sequence's int and slice forms
        if self._rows is None:
            self._rows = self._read_rows()
        return self._rows[index]


class DefaultIndexOnly(KeysetPhase):
    name = "index_only"
    scanned_counter = "index_docs_scanned"
    # The phases before never write an index-only document (ensure_schema adds fields to the
    # schema; products writes product documents, whose exported values go unused), so the
    # scratch table is loaded from the index from the job's start, alongside them.
    prepare_early = True

    def __init__(self, ctx: JobContext, products: ProductsTable, export_started: threading.Event | None = None):
        self.ctx, self.products = ctx, products
        #: Set once the export streams, or once `prepare` ends without one (see EnsureSchema).
        self.export_started = export_started or threading.Event()
        self.batch_size = ctx.settings.typesense_page_size
        scratch = ctx.settings.scratch_table
        # A dry run may not create tables, but a session's temporary table is no write to data.
        if ctx.dry_run:
            self.scratch = sql.Identifier(scratch.name)
        else:
            self.scratch = sql.Identifier(scratch.schema, scratch.name)
        self.query = KeysetQuery(self.scratch, "doc_id", ("key", "created_at", "deleted_at"))

    @property
    def key_kind(self) -> KeyKind:
        return KeyKind.TEXT

    def prepare(self, resuming: bool) -> None:
        try:
            if resuming and self._scratch_exists():
                return
            self._build_scratch()
        finally:
            self.export_started.set()

    def _scratch_exists(self) -> bool:
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (self.scratch.as_string(cur),))
            return bool(cur.fetchone()[0])

    def _build_scratch(self) -> None:
        """Stream the index's export into the scratch table in one transaction: all or nothing.
        The worker only moves bytes; Postgres parses the JSON lines and maps ids to keys."""
        kind = self.products.key_kind
        conn = self.ctx.pg.connection()
        temporary = sql.SQL("TEMPORARY ") if self.ctx.dry_run else sql.SQL("")
        lines = sql.Identifier("backfill_export_lines")
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.scratch))
            cur.execute(sql.SQL("CREATE TEMPORARY TABLE {} (doc jsonb) ON COMMIT DROP").format(lines))
            with cur.copy(_COPY_JSON_LINES.format(lines)) as copy:
                for chunk in self.ctx.index.export_lines(",".join(("id", *NEW_FIELDS))):
                    self.export_started.set()  # streaming now: a schema change may go ahead
                    self.ctx.stop.sleep(0)  # a stop rolls the load back; the next start redoes it
                    copy.write(chunk)
            doc_id = sql.SQL("d.doc_id")
            # OFFSET 0 keeps the subquery whole: flattened, each use of doc_id in the key's
            # expression would extract it from the jsonb again.
            cur.execute(
                sql.SQL(
                    "CREATE {temp}TABLE {t} AS SELECT d.doc_id, {key} AS key, d.created_at, d.deleted_at FROM"
                    " (SELECT doc->>'id' AS doc_id, (doc->>'created_at')::bigint AS created_at,"
                    " (doc->>'deleted_at')::bigint AS deleted_at FROM {lines} WHERE doc IS NOT NULL OFFSET 0) d"
                ).format(temp=temporary, t=self.scratch, key=kind.document_key_sql(doc_id), lines=lines)
            )
            cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (doc_id)").format(self.scratch))

    def count(self) -> int:
        return _count(self.ctx, self.scratch)

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
        """From the index itself: the scratch table is gone once the phase has finished."""
        found = {d["id"]: d for d in self.ctx.index.export_by_ids([str(k) for k in keys], ",".join(("id", *NEW_FIELDS)))}
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
        return _read_results(self.ctx.sink.import_documents(documents, "update"), updated="index_only_defaulted")

    def finish(self) -> None:
        self.ctx.sink.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.scratch), ())


def _count(ctx: JobContext, table: sql.Composable) -> int:
    with ctx.pg.connection().cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
        return int(cur.fetchone()[0])


def _read_results(report: ImportReport, updated: str) -> BatchResult:
    """404 means the document is not in the index (counted); any other refusal is returned
    with its id and error, for the engine to record."""
    missing = sum(1 for f in report.failed if f.code == 404)
    failures = [Failure(key=f.id, error=f.error, code=f.code) for f in report.failed if f.code != 404]
    return BatchResult({updated: report.succeeded, "missing_in_index": missing}, failures)


def _defaults_patch(row: tuple) -> dict[str, int]:
    """The fields an index-only document lacks, each set to 0 (values it has are kept)."""
    _, created_at, deleted_at, _ = row
    return {name: 0 for name, value in zip(NEW_FIELDS, (created_at, deleted_at)) if value is None}
