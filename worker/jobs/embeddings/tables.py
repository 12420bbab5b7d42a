"""The job postings and the queue, as the embeddings job reads and writes them."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from worker.exceptions import SchemaMismatch
from worker.job import JobContext, require_columns

NEEDED = {
    "jobs": ("id", "title", "description", "is_active", "embedding"),
    "queue": ("job_id", "status", "error_message", "updated_at"),
}


def text(alias: str) -> sql.Composable:
    """What is embedded: `title || ' ' || description`, trimmed (a NULL description is none)."""
    j = sql.Identifier(alias)
    return sql.SQL("btrim({j}.title || ' ' || coalesce({j}.description, ''))").format(j=j)


def text_hash(alias: str) -> sql.Composable:
    """The text's md5: a row whose text changed after it was read is not written."""
    return sql.SQL("md5({})").format(text(alias))


@dataclass(frozen=True)
class EmbeddingColumn:
    """`jobs.embedding`: pgvector's `vector(N)` or an array of reals; its SQL type for a cast."""

    type_name: str
    dimensions: int | None

    @property
    def cast(self) -> sql.Composable:
        return sql.SQL("::{}").format(sql.SQL(self.type_name))


class Tables:
    def __init__(self, ctx: JobContext):
        settings = ctx.job_settings
        self.ctx = ctx
        self.jobs = sql.Identifier(settings.jobs.schema, settings.jobs.name)
        self.queue = sql.Identifier(settings.queue.schema, settings.queue.name)

    def embedding_column(self) -> EmbeddingColumn:
        """The column's type; SchemaMismatch (exit 5) if a table or column is missing, the
        column is not a vector or an array of reals, or its dimension is not EMBEDDING_DIMENSIONS
        (a vector's declared one, else that of the embeddings already there)."""
        for kind, table, needs, variable in (
            ("jobs", self.jobs, "its job postings table", "EMBEDDING_JOBS_TABLE"),
            ("queue", self.queue, "its embedding queue table", "EMBEDDING_QUEUE_TABLE"),
        ):
            require_columns(self.ctx.pg, table, NEEDED[kind], "embeddings", needs, variable)
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(
                "SELECT t.typname, format_type(a.atttypid, a.atttypmod), a.atttypmod FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
                " WHERE a.attrelid = %s::regclass AND a.attname = 'embedding'",
                (self.jobs.as_string(cur),),
            )
            typname, formatted, typmod = cur.fetchone()
            if typname == "vector":
                column = EmbeddingColumn("vector", typmod if typmod > 0 else None)
            elif typname in ("_float4", "_float8"):
                cur.execute(sql.SQL("SELECT array_length(embedding, 1) FROM {} WHERE embedding IS NOT NULL LIMIT 1").format(self.jobs))
                found = cur.fetchone()
                column = EmbeddingColumn(formatted, found[0] if found else None)
            else:
                raise SchemaMismatch(f"{self.jobs.as_string(cur)}.embedding is {formatted}: a vector (pgvector) or a real[] is needed")
        wanted = self.ctx.job_settings.dimensions
        if column.dimensions is not None and column.dimensions != wanted:
            raise SchemaMismatch(
                f"{self.jobs.as_string(None)}.embedding holds {column.dimensions} dimensions, but EMBEDDING_DIMENSIONS is {wanted}"
            )
        return column

    def coverage(self) -> dict[str, object]:
        """Active jobs with an embedding, in numbers and percent."""
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*), count(embedding) FROM {} WHERE is_active").format(self.jobs))
            active, embedded = cur.fetchone()
        percent = round(100.0 * embedded / active, 2) if active else 100.0
        return {"active_jobs": active, "embedded": embedded, "coverage": f"{embedded}/{active} ({percent}%)"}
