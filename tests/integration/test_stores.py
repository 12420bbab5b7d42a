"""A job declares the stores it uses besides Postgres and MongoDB: only those are configured,
required, connected to and throttled on. A job that uses only Postgres runs with no Typesense
settings at all."""

from __future__ import annotations

from typing import Sequence

from psycopg import sql

from tests.integration.inventory_data import pg_connect, run_worker
from utils.keyset import Key, KeysetQuery
from worker.config import load_settings
from worker.engine import Engine, EngineOptions
from worker.job import BatchResult, Job, KeysetPhase
from worker.resources import Resources
from worker.retry import RetryPolicy
from worker.stop import StopFlag


def without_typesense(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("TYPESENSE_")}


class MarkDone(KeysetPhase):
    name = "mark_done"
    batch_size = 7

    def __init__(self, job: "PostgresOnly"):
        self.ctx = job.ctx
        self.query = KeysetQuery(job.table, "id", ("done",))

    def fetch(self, after: Key | None, limit: int) -> Sequence[tuple]:
        return self.query.page(self.ctx.pg.connection(), after, limit)

    def process(self, rows: Sequence[tuple]) -> BatchResult:
        with self.ctx.sink.transaction() as tx:
            marked = tx.write(
                sql.SQL("UPDATE {} SET done = true WHERE id = ANY(%s) AND NOT done").format(self.query.table),
                ([row[0] for row in rows],),
            )
        return BatchResult({"marked": marked})


class PostgresOnly(Job):
    name = "postgres_only"
    checkpoint_id = "postgres_only"

    def __init__(self, ctx, table: sql.Identifier):
        super().__init__(ctx)
        self.table = table

    def phases(self):
        return (MarkDone(self),)


def test_a_job_without_typesense_runs_with_no_typesense_settings(worker_env):
    table = sql.Identifier("public", "items_" + worker_env["MONGO_DB_NAME"])
    with pg_connect(worker_env) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, done boolean NOT NULL DEFAULT false)").format(table))
        conn.execute(sql.SQL("INSERT INTO {} (id) SELECT generate_series(1, 50)").format(table))
    settings = load_settings(without_typesense(worker_env))
    stop = StopFlag()

    with Resources.open(settings, PostgresOnly.stores) as resources:
        assert resources.index is None, "no Typesense client for a job that does not use it"
        throttler = resources.throttler(stop)
        assert [type(i).__name__ for i in throttler.indicators] == ["PostgresActivity"]
        job = PostgresOnly(resources.job_context(stop), table)
        policy = RetryPolicy(timeout_seconds=10, max_wait_seconds=0.5)
        cp = Engine(job, resources.checkpoints, resources.failures, stop, policy, EngineOptions(owner="t"), throttler).run()

    assert (str(cp.status), cp.counters["marked"]) == ("completed", 50)
    with pg_connect(worker_env) as conn:
        assert conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE done").format(table)).fetchone()[0] == 50
        conn.execute(sql.SQL("DROP TABLE {}").format(table))


def test_the_api_key_is_required_only_where_typesense_is_used(worker_env):
    env = without_typesense(worker_env)

    status = run_worker(env, "status")
    refused = run_worker(env, "run", "--job", "inventory_fields")

    assert status.returncode == 0, status.stderr
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "configuration error: TYPESENSE_API_KEY is required (job 'inventory_fields' uses typesense)"
    ]
