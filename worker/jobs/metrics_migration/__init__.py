"""Metrics fan-out migration (seed 001): `extracted_positions` into five tables, whole groups.

`python -m worker run --job metrics_migration [--dry-run]`; `verify --job metrics_migration`.

Phases:
1. `migrate`: a keyset over `collector_result_id`, grouped, so a batch holds whole collector
   results whatever BATCH_SIZE says. Per batch, in one transaction, five set-based inserts with
   `ON CONFLICT DO NOTHING` (mapping.py). The counters (`facts_created`, `brand_metrics_created`,
   `competitor_metrics_created`, `brand_sentiment_created`, `competitor_sentiment_created`,
   `groups_repaired`) are anti-joins read before the write: exact after a crash, and what a dry
   run prints. A group a crashed run or the seed's script left half-written is completed and
   counted in `groups_repaired`. What cannot be migrated is a recorded failure naming the row:
   `brand_row_missing` (the group writes nothing), `fact_refused`, `competitor_not_found`,
   `competitor_ambiguous`, `sentiment_label_invalid` (the rest of the group is written).
2. `refresh` (step): `REFRESH MATERIALIZED VIEW CONCURRENTLY` when the view is populated and has a
   usable unique index, a plain refresh otherwise; the log and the counter say which.
3. `verify` (verify step): per table, what the source implies against what exists; a mismatch
   fails the run with the counts and up to 10 collector results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import structlog
from psycopg import sql

from utils.keyset import GroupedKeysetQuery, Key
from worker.config import TableName
from worker.exceptions import SchemaMismatch, VerificationFailed
from worker.job import BatchResult, Counters, Differences, Failure, Job, JobContext, KeysetPhase, Page, Phase, Row, Step
from worker.job_settings import setting
from worker.jobs.metrics_migration.mapping import TARGETS, VIEW, Mapping
from worker.tables import missing_tables

log = structlog.get_logger("worker.jobs.metrics_migration")
COUNTERS = {
    "metric_facts": "facts_created", "brand_metrics": "brand_metrics_created", "competitor_metrics": "competitor_metrics_created",
    "brand_sentiment": "brand_sentiment_created", "competitor_sentiment": "competitor_sentiment_created",
}


@dataclass(frozen=True)
class MetricsSettings:
    source: TableName = setting(
        "METRICS_SOURCE_TABLE", TableName("public", "extracted_positions"),
        "The source: one row per collector result and name (the brand's own row has competitor_name NULL). The five"
        " tables and the view it fills are in its schema.",
    )


class Migrate(KeysetPhase):
    name = "migrate"
    scanned_counter = "source_rows"
    row_errors = ()  # a batch is whole groups: never halved (what cannot be written is judged, not raised)

    def __init__(self, ctx: JobContext, mapping: Mapping):
        self.ctx, self.mapping = ctx, mapping
        self.batch_size = ctx.settings.batch_size
        self.query = GroupedKeysetQuery(mapping.source, "collector_result_id", ("id",), row_key="id")

    def fetch(self, after: Key | None, limit: int) -> Sequence[Row]:
        conn = self.ctx.pg.connection()
        size, last, final = self.query.summary(conn, after, limit)
        return Page(size, last, ("range", after, last), rows=lambda: self.query.span(conn, after, last), final=final)

    def fetch_keys(self, keys: Sequence[Key]) -> Sequence[Row]:
        """The whole groups of failed rows (`retry`): migrating a group again only adds what it lacks."""
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(sql.SQL("SELECT DISTINCT collector_result_id FROM {} WHERE id = ANY(%s)").format(self.mapping.source), (list(keys),))
            groups = [r[0] for r in cur.fetchall()]
        return Page(len(groups), None, ("groups", groups), rows=lambda: [(g,) for g in groups])

    def _condition(self, rows: Sequence[Row]) -> tuple[sql.Composable, tuple[Any, ...]]:
        """The batch's collector results as a condition on the source (alias `e`). `rows` is
        always a Page (fetch, fetch_keys): the engine never halves a batch of this phase."""
        kind, *bounds = rows.summary  # type: ignore[attr-defined]
        if kind == "groups":
            return sql.SQL("e.collector_result_id = ANY(%s)"), (bounds[0],)
        after, last = bounds
        if after is None:
            return sql.SQL("e.collector_result_id <= %s"), (last,)
        return sql.SQL("e.collector_result_id > %s AND e.collector_result_id <= %s"), (after, last)

    def tally(self, rows: Sequence[Row]) -> Counters:
        condition, params = self._condition(rows)
        with self.ctx.sink.transaction() as tx:
            [counts] = tx.read(self.mapping.tally(condition), params)
        return {**{COUNTERS[t]: n for t, n in zip(TARGETS, counts)}, "groups_repaired": counts[-1]}

    def process(self, rows: Sequence[Row]) -> BatchResult:
        condition, params = self._condition(rows)
        with self.ctx.sink.transaction() as tx:
            for statement in self.mapping.writes(condition):
                tx.write(statement, params)
            refused = tx.read(self.mapping.failures(condition), params)
        return BatchResult(failures=[Failure(str(key), error) for key, error in refused])


class Refresh(Step):
    name = "refresh"

    def __init__(self, ctx: JobContext, mapping: Mapping):
        self.ctx, self.mapping = ctx, mapping

    def run(self) -> Counters:
        view = self.mapping.t(VIEW)
        with self.ctx.sink.transaction() as tx:
            [(populated, unique)] = tx.read(
                "SELECT c.relispopulated, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique"
                " AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL) FROM pg_class c WHERE c.oid = %s::regclass",
                (f"{self.mapping.schema}.{VIEW}",),
            )
            concurrently = populated and unique
            tx.write(sql.SQL("REFRESH MATERIALIZED VIEW {}{}").format(sql.SQL("CONCURRENTLY " if concurrently else ""), view))
        why = None if concurrently else ("not populated yet" if not populated else "no usable unique index")
        log.info("materialized view refresh", view=VIEW, mode="concurrently" if concurrently else "plain", why_plain=why)
        return {"view_refreshed_concurrently" if concurrently else "view_refreshed_plainly": 1}


class Verify(Step):
    name = "verify"
    verifies = True

    def __init__(self, job: "MetricsMigrationJob"):
        self.job = job

    def run(self) -> Counters:
        found = self.job.verify()
        if found.total:
            summary = "; ".join(f"{k}: {v['count']} (e.g. collector results {v['examples']})" for k, v in found.report()["by_kind"].items() if v["count"])
            raise VerificationFailed(f"{found.total} row(s) the source implies are missing: {summary}")
        return {"verified_groups": self.job.groups()}


class MetricsMigrationJob(Job):
    name = "metrics_migration"
    checkpoint_id = "metrics_migration"
    settings_class = MetricsSettings

    @property
    def mapping(self) -> Mapping:
        return Mapping(self.ctx.job_settings.source)

    def phases(self) -> Sequence[Phase]:
        return (Migrate(self.ctx, self.mapping), Refresh(self.ctx, self.mapping), Verify(self))

    def check(self) -> None:
        m = self.mapping
        names = [f"{m.schema}.{t}" for t in (*TARGETS, VIEW, "brands", "brand_competitors", "generated_queries")]
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute("SELECT n, to_regclass(n) IS NULL FROM unnest(%s::text[]) n", ([str(self.ctx.job_settings.source), *names],))
            absent = [n for n, missing in cur.fetchall() if missing]
        if absent:
            raise SchemaMismatch(missing_tables(absent, self.name, "its source and the tables it fills, all in the source's schema", "METRICS_SOURCE_TABLE"))

    def verify(self) -> Differences:
        """Rows the source implies that the five tables lack, by table (examples: collector results)."""
        found = Differences(tuple(f"{t}_missing" for t in TARGETS), examples_per_kind=10)
        missing = self.mapping.missing()
        with self.ctx.sink.transaction() as tx:
            for t in TARGETS:
                keys = tx.read(self.mapping.batch(sql.SQL("true")) + sql.SQL("SELECT collector_result_id FROM ({}) m ORDER BY 1").format(missing[t]))
                found.add(f"{t}_missing", [str(k[0]) for k in keys])
        return found

    def groups(self) -> int:
        with self.ctx.sink.transaction() as tx:
            return tx.read(sql.SQL("SELECT count(DISTINCT collector_result_id) FROM {}").format(self.mapping.source))[0][0]
