"""A snapshot of the index in a Postgres table: every document's id, the key it would have as a
product's document, and the job's fields, streamed once from the export endpoint.

Search pages shift as documents change and cannot be resumed exactly; a table walked by keyset
can, and Postgres compares it with the products table in SQL. The load is one transaction (all
or nothing: a stop or a crash part way leaves no half table, the next start redoes it), and the
worker only moves bytes: Postgres parses the JSON lines and maps ids to keys.
"""

from __future__ import annotations

import threading

from psycopg import sql

from worker.job import JobContext
from worker.jobs.inventory_fields.products_table import EXPORT_FIELDS, NEW_FIELDS, ProductsTable, count_rows

# COPY as CSV with control characters for quote and delimiter: JSON never holds them unescaped,
# so each line of an export arrives whole in one jsonb column, parsed by Postgres.
_COPY_JSON_LINES = sql.SQL("COPY {} (doc) FROM STDIN (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')")


class IndexSnapshot:
    """The table `SCRATCH_TABLE` (in a dry run, `pg_temp`'s table of that name): each document
    as exported (`doc`), and parsed from it by Postgres as the COPY streams in (generated
    columns, so the parsing overlaps the export instead of following it): `doc_id`, the fields
    of NEW_FIELDS (NULL where a document lacks one) and `key`, the product key the id is the
    document of (NULL for an id no product could have)."""

    def __init__(self, ctx: JobContext, products: ProductsTable, index_on: str, started: threading.Event | None = None):
        """`index_on`: the column the phase walks or joins by (`doc_id` becomes the primary key)."""
        self.ctx, self.products, self.index_on = ctx, products, index_on
        self.table = ctx.sink.scratch(ctx.job_settings.scratch_table)
        #: Set once the export streams (see EnsureSchema).
        self.started = started or threading.Event()

    def exists(self) -> bool:
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (self.table.as_string(cur),))
            return bool(cur.fetchone()[0])

    def load(self) -> None:
        """Replace the table with the index as it is now."""
        with self.ctx.sink.scratch_transaction() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.table))
            cur.execute(self._create())
            with cur.copy(_COPY_JSON_LINES.format(self.table)) as copy:
                for chunk in self.ctx.index.export_lines(EXPORT_FIELDS):
                    self.started.set()  # streaming now: a schema change may go ahead
                    self.ctx.stop.sleep(0)  # a stop rolls the load back; the next start redoes it
                    copy.write(chunk)
            cur.execute(sql.SQL("DELETE FROM {} WHERE doc IS NULL").format(self.table))  # blank lines, if any
            if self.index_on == "doc_id":
                cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (doc_id)").format(self.table))
            else:
                cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(self.table, sql.Identifier(self.index_on)))
            self.ctx.stop.sleep(0)  # the last moment a stop can still roll the load back

    def _create(self) -> sql.Composed:
        doc_id = sql.SQL("(doc->>'id')")
        fields = [
            sql.SQL("{} bigint GENERATED ALWAYS AS ((doc->>{})::bigint) STORED").format(sql.Identifier(f), sql.Literal(f))
            for f in NEW_FIELDS
        ]
        return sql.SQL(
            "CREATE TABLE {t} (doc jsonb, doc_id text GENERATED ALWAYS AS {doc_id} STORED, {fields},"
            " key {key_type} GENERATED ALWAYS AS ({key}) STORED)"
        ).format(
            t=self.table,
            doc_id=doc_id,
            fields=sql.SQL(", ").join(fields),
            key_type=sql.SQL(self.products.key_kind.sql_type),
            key=self.products.key_kind.document_key_sql(doc_id),
        )

    def count(self) -> int:
        return count_rows(self.ctx, self.table)

    def drop(self) -> None:
        with self.ctx.sink.scratch_transaction() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.table))
