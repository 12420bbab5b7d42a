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

from decimal import Decimal
from typing import Any, Sequence

from psycopg import sql

from utils.keyset import Key, KeyKind, KeysetQuery
from utils.pg import ROW_ERRORS
from utils.typesense import ImportResult, ObjectNotFound
from worker.exceptions import SchemaMismatch
from worker.job import BatchResult, Counters, Failure, Job, JobContext, KeysetPhase, Phase, Step

NEW_FIELDS = ("created_at", "deleted_at")
_TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone")
_INTEGER_TYPES = ("smallint", "integer", "bigint")
#: Documents loaded into the scratch table between two looks at the stop flag.
_STOP_CHECK_EVERY = 10_000
_SCRATCH_KEY_TYPES = {KeyKind.INTEGER: "bigint", KeyKind.UUID: "uuid", KeyKind.TEXT: "text"}
# Unix seconds computed by Postgres: no datetime objects per row, and an 'infinity' timestamp
# arrives as Decimal('Infinity'), which fails that one row (OverflowError), not the whole page.
_CREATED_EPOCH = sql.SQL("extract(epoch FROM created_at)")


class InventoryFieldsJob(Job):
    name = "inventory_fields"
    checkpoint_id = "backfill_inventory_fields"

    def phases(self) -> Sequence[Phase]:
        products = ProductsTable(self.ctx)
        return (
            EnsureSchema(self.ctx),
            BackfillProducts(self.ctx, products),
            DefaultIndexOnly(self.ctx, products),
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
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(self.identifier), (keys,))
            return {str(k) for (k,) in cur.fetchall()}


class EnsureSchema(Step):
    name = "ensure_schema"

    def __init__(self, ctx: JobContext):
        self.ctx = ctx

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
            self.ctx.sink.add_index_fields(missing)
        return {}


class BackfillProducts(KeysetPhase):
    name = "products"
    scanned_counter = "rows_scanned"
    row_errors = (*ROW_ERRORS, OverflowError)

    def __init__(self, ctx: JobContext, products: ProductsTable):
        self.ctx, self.products = ctx, products
        self.batch_size = ctx.settings.batch_size
        self.query = KeysetQuery(products.identifier, "id", (_CREATED_EPOCH, "deleted_at"))

    @property
    def key_kind(self) -> KeyKind:
        return self.products.key_kind

    def prepare(self, resuming: bool) -> None:
        self.products.check()

    def count(self) -> int:
        return _count(self.ctx, self.products.identifier)

    def fetch(self, after: Key | None, limit: int) -> Sequence[tuple]:
        return self.query.page(self.ctx.pg.connection(), after, limit)

    def fetch_keys(self, keys: Sequence[Key]) -> Sequence[tuple]:
        return self.query.by_keys(self.ctx.pg.connection(), keys)

    def tally(self, rows: Sequence[tuple]) -> Counters:
        return {"pg_rows_updated": sum(1 for *_, deleted_at in rows if deleted_at is None)}

    def process(self, rows: Sequence[tuple]) -> BatchResult:
        documents = [
            {"id": str(key), "created_at": _unix_seconds(created_at), "deleted_at": deleted_at or 0}
            for key, created_at, deleted_at in rows
        ]
        null_keys = [key for key, _, deleted_at in rows if deleted_at is None]
        if null_keys:
            self.ctx.sink.execute(
                sql.SQL("UPDATE {} SET deleted_at = 0 WHERE id = ANY(%s) AND deleted_at IS NULL").format(
                    self.products.identifier
                ),
                (null_keys,),
            )
        return _read_results(self.ctx.sink.import_documents(documents, "update"), updated="index_docs_updated")


class DefaultIndexOnly(KeysetPhase):
    name = "index_only"
    scanned_counter = "index_docs_scanned"
    # The products phase never writes an index-only document, so the scratch table can be
    # loaded from the index while that phase runs (values of product documents go unused).
    prepare_early = True

    def __init__(self, ctx: JobContext, products: ProductsTable):
        self.ctx, self.products = ctx, products
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
        if resuming and self._scratch_exists():
            return
        self._build_scratch()

    def _scratch_exists(self) -> bool:
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (self.scratch.as_string(cur),))
            return bool(cur.fetchone()[0])

    def _build_scratch(self) -> None:
        """Stream the index's ids into the scratch table in one transaction: all or nothing."""
        kind = self.products.key_kind
        conn = self.ctx.pg.connection()
        temporary = sql.SQL("TEMPORARY ") if self.ctx.dry_run else sql.SQL("")
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.scratch))
            cur.execute(
                sql.SQL(
                    "CREATE {temp}TABLE {t} (doc_id text NOT NULL, key {kt}, created_at bigint, deleted_at bigint)"
                ).format(temp=temporary, t=self.scratch, kt=sql.SQL(_SCRATCH_KEY_TYPES[kind]))
            )
            copy_sql = sql.SQL("COPY {} (doc_id, key, created_at, deleted_at) FROM STDIN").format(self.scratch)
            with cur.copy(copy_sql) as copy:
                for n, doc in enumerate(self.ctx.index.export_documents(",".join(("id", *NEW_FIELDS)))):
                    if n % _STOP_CHECK_EVERY == 0:
                        self.ctx.stop.sleep(0)  # a stop rolls the load back; the next start redoes it
                    doc_id = doc["id"]
                    copy.write_row((doc_id, kind.parse_document_id(doc_id), doc.get("created_at"), doc.get("deleted_at")))
            cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (doc_id)").format(self.scratch))

    def count(self) -> int:
        return _count(self.ctx, self.scratch)

    def fetch(self, after: Key | None, limit: int) -> Sequence[tuple]:
        statement = sql.SQL(
            "SELECT s.doc_id, s.created_at, s.deleted_at, p.id IS NULL FROM ({page}) s"
            " LEFT JOIN {products} p ON p.id = s.key ORDER BY s.doc_id"
        ).format(page=self.query.statement(after is not None), products=self.products.identifier)
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(statement, (limit,) if after is None else (after, limit))
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
        documents = [{"id": row[0], **patch} for row in rows if row[3] and (patch := _defaults_patch(row))]
        return _read_results(self.ctx.sink.import_documents(documents, "update"), updated="index_only_defaulted")

    def finish(self) -> None:
        self.ctx.sink.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.scratch), ())


def _count(ctx: JobContext, table: sql.Composable) -> int:
    with ctx.pg.connection().cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
        return int(cur.fetchone()[0])


def _read_results(results: list[ImportResult], updated: str) -> BatchResult:
    """Read every import result line: 404 means the document is not in the index (counted);
    any other failure is returned with its id and error, for the engine to record."""
    counters = {updated: 0, "missing_in_index": 0}
    failures = []
    for result in results:
        if result.success:
            counters[updated] += 1
        elif result.code == 404:
            counters["missing_in_index"] += 1
        else:
            failures.append(Failure(key=result.id, error=result.error or "unknown error", code=result.code))
    return BatchResult(counters, failures)


def _defaults_patch(row: tuple) -> dict[str, int]:
    """The fields an index-only document lacks, each set to 0 (values it has are kept)."""
    _, created_at, deleted_at, _ = row
    return {name: 0 for name, value in zip(NEW_FIELDS, (created_at, deleted_at)) if value is None}


def _unix_seconds(epoch: Decimal | float | None) -> int:
    """Whole seconds, truncated as int(datetime.timestamp()) would; NULL becomes 0."""
    return 0 if epoch is None else int(epoch)
