"""The `reconcile_queue` phase: afterwards, the queue tells the truth.

Every active job gets a queue row whose status follows from the table: `completed` exactly when
it has an embedding, `failed` when its text is a recorded poison (with the provider's message),
`pending` otherwise. Walked by `id` over the active jobs, one transaction per batch. The
counters are read before the batch's writes (and kept with its intent, so a batch redone after
a crash counts the same):
- `requeued_silent`: "completed" rows without an embedding (the seed's silent failures);
- `enqueued_missing`: active jobs that had no queue row;
- `marked_completed`: rows not yet completed whose job has an embedding;
- `marked_failed`, `marked_pending`: other rows whose status changes.
"""

from __future__ import annotations

from typing import Any, Sequence

from psycopg import sql

from utils.keyset import Key, KeysetQuery
from worker.job import BatchResult, Counters, JobContext, KeysetPhase, Page, Row
from worker.jobs.embeddings.tables import Tables

#: The status each active job's queue row must have (`j` the job, `p` its recorded poison).
TARGET = sql.SQL("CASE WHEN j.embedding IS NOT NULL THEN 'completed' WHEN p.id IS NOT NULL THEN 'failed' ELSE 'pending' END")


class ReconcileQueue(KeysetPhase):
    name = "reconcile_queue"
    row_errors = ()

    def __init__(self, ctx: JobContext, tables: Tables, poison_phase: str):
        self.ctx, self.tables, self.poison_phase = ctx, tables, poison_phase
        self.batch_size = ctx.settings.batch_size
        self.query = KeysetQuery(tables.jobs, "id", (), filter=sql.SQL("is_active"))
        self.poison: tuple[list[int], list[str]] = ([], [])

    def prepare(self, resuming: bool) -> None:
        failed = sorted((int(f["key"]), f["error"]) for f in self.ctx.recorded_failures(self.poison_phase))
        self.poison = ([i for i, _ in failed], [e for _, e in failed])

    def count(self) -> int:
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE is_active").format(self.tables.jobs))
            return int(cur.fetchone()[0])

    def fetch(self, after: Key | None, limit: int) -> Sequence[Row]:
        conn = self.ctx.pg.connection()
        size, last = self.query.summary(conn, after, limit)
        return Page(size, last, (after, last), rows=lambda: self.query.span(conn, after, last))

    def _jobs(self, rows: Sequence[Row], join: sql.Composable = sql.SQL("")) -> tuple[sql.Composable, tuple[Any, ...]]:
        """`FROM` the batch's active jobs `j`, each with its recorded poison `p` (if any), `join`
        and the batch's `WHERE`."""
        after, last = rows.summary  # type: ignore[attr-defined]  # always a Page: never split
        lower = sql.SQL("j.id > %s AND ") if after is not None else sql.SQL("")
        return (
            sql.SQL("{jobs} j LEFT JOIN unnest(%s::int[], %s::text[]) AS p(id, error) ON p.id = j.id{join} WHERE j.is_active AND {lower}j.id <= %s").format(
                jobs=self.tables.jobs, join=join, lower=lower
            ),
            (*self.poison, *((after,) if after is not None else ()), last),
        )

    def tally(self, rows: Sequence[Row]) -> Counters:
        jobs, params = self._jobs(rows, sql.SQL(" LEFT JOIN {} q ON q.job_id = j.id").format(self.tables.queue))
        with self.ctx.sink.transaction() as tx:
            [counts] = tx.read(
                sql.SQL(
                    "SELECT count(*) FILTER (WHERE q.job_id IS NULL),"
                    " count(*) FILTER (WHERE q.status = 'completed' AND j.embedding IS NULL),"
                    " count(*) FILTER (WHERE q.status <> 'completed' AND j.embedding IS NOT NULL),"
                    " count(*) FILTER (WHERE q.status NOT IN ('completed', 'failed') AND {target} = 'failed'),"
                    " count(*) FILTER (WHERE q.status NOT IN ('completed', 'pending') AND {target} = 'pending')"
                    " FROM {jobs}"
                ).format(target=TARGET, jobs=jobs),
                params,
            )
        return dict(zip(("enqueued_missing", "requeued_silent", "marked_completed", "marked_failed", "marked_pending"), counts))

    def process(self, rows: Sequence[Row]) -> BatchResult:
        jobs, params = self._jobs(rows)
        error = sql.SQL("CASE WHEN j.embedding IS NULL THEN p.error END")
        with self.ctx.sink.transaction() as tx:
            tx.write(
                sql.SQL(
                    "INSERT INTO {queue} (job_id, status, error_message) SELECT j.id, {target}, {error} FROM {jobs}"
                    " AND NOT EXISTS (SELECT 1 FROM {queue} q WHERE q.job_id = j.id) ON CONFLICT (job_id) DO NOTHING"
                ).format(queue=self.tables.queue, target=TARGET, error=error, jobs=jobs),
                params,
            )
            tx.write(
                sql.SQL(
                    "UPDATE {queue} q SET status = t.status, error_message = CASE WHEN t.status = 'pending' AND q.status = 'completed'"
                    " THEN 'requeued: marked completed without an embedding' ELSE t.error END, updated_at = now()"
                    " FROM (SELECT j.id, {target} AS status, {error} AS error FROM {jobs}) t WHERE q.job_id = t.id AND q.status <> t.status"
                ).format(queue=self.tables.queue, target=TARGET, error=error, jobs=jobs),
                params,
            )
        return BatchResult()
