"""Seed 001 as a job: `metrics_migration`, on seed 001's tables (a schema per test), run as a
real process."""

from __future__ import annotations

import json

import psycopg
import pymongo
import pytest

from tests.integration.inventory_data import events, own_schema, run_worker, schema_connect, schema_execute
from tests.integration.kill_compare import assert_interruptions_change_nothing, counters_of
from tests.integration.metrics_data import counts
from worker import tables
from worker.demo_metrics import load_example

JOB = ["--job", "metrics_migration"]
CREATED = ("facts_created", "brand_metrics_created", "competitor_metrics_created", "brand_sentiment_created", "competitor_sentiment_created")


@pytest.fixture
def env(worker_env):
    with own_schema(worker_env, "mm") as (schema, env):
        env.update(METRICS_SOURCE_TABLE=f"{schema}.extracted_positions", BATCH_SIZE="100", BATCH_SIZE_MAX="100")
        with connect(env) as conn:
            tables.fresh_schema(conn, schema, "metrics_migration")
        yield env


def connect(env: dict[str, str]) -> psycopg.Connection:
    return schema_connect(env, env["METRICS_SOURCE_TABLE"].split(".")[0])


def execute(env: dict[str, str], statement: str, *params) -> list[tuple]:
    return schema_execute(env, env["METRICS_SOURCE_TABLE"].split(".")[0], statement, *params)


def migrate(env: dict[str, str], *flags: str) -> dict[str, int]:
    result = run_worker(env, "run", *JOB, *flags)
    assert result.returncode == 0, result.stderr + result.stdout[-3000:]
    if "--dry-run" in flags:
        [done] = [e for e in events(result.stdout) if e.get("event") == "dry run: nothing was written"]
        return done["would"]
    status, counters = counters_of(env, JOB)
    assert status == "completed"
    return counters


def created(counters: dict[str, int]) -> tuple[int, ...]:
    return tuple(counters.get(k, 0) for k in CREATED)


def failures(env: dict[str, str]) -> list[str]:
    listed = run_worker(env, "failures", *JOB).stdout.splitlines()
    return sorted(line.split("\t")[-1] for line in listed if line.startswith("metrics_migration"))


def test_the_seeds_example_ends_with_the_seeds_numbers_through_random_kills(env, tmp_path):
    def prepare(e: dict[str, str]) -> None:
        with connect(e) as conn:
            tables.fresh_schema(conn, e["METRICS_SOURCE_TABLE"].split(".")[0], "metrics_migration")
            load_example(conn)  # 1,500 rows: 250 groups of 6, the last 10 without sentiment
        with pymongo.MongoClient(e["MONGO_URI"]) as client:
            client.drop_database(e["MONGO_DB_NAME"])

    def state(e: dict[str, str]) -> tuple:
        with connect(e) as conn:
            view = conn.execute("SELECT sum(total_responses), sum(positive_count), sum(negative_count), sum(neutral_count) FROM mv_brand_daily_metrics").fetchone()
            return counts(conn), view

    env = {**env, "SLEEP_BETWEEN_BATCHES": "0.1"}  # BATCH_SIZE=100: not a multiple of the groups' 6 rows
    baseline, interrupted = assert_interruptions_change_nothing(env, JOB, prepare=prepare, state=state, log_dir=tmp_path / "runs", kills=3)
    assert baseline.state == ((250, 250, 1250, 240, 1200), (250, 80, 80, 80))  # the view refreshed with every fact
    assert created(baseline.counters) == (250, 250, 1250, 240, 1200) and baseline.counters["groups_repaired"] == 0
    assert baseline.counters["source_rows"] == 1500 and baseline.counters["view_refreshed_concurrently"] == 1


def offset_loop_like_the_seed(env: dict[str, str]) -> None:
    """Seed 001's algorithm: OFFSET pages of 100 rows; a row whose group already has a fact is
    "already migrated" and skipped; no transaction across the tables."""
    with connect(env) as conn:
        offset = 0
        while rows := conn.execute(
            "SELECT id, collector_result_id, brand_id, customer_id, query_id, competitor_name FROM extracted_positions ORDER BY id OFFSET %s LIMIT 100",
            (offset,),
        ).fetchall():
            done_before = {r[0] for r in conn.execute("SELECT collector_result_id FROM metric_facts WHERE collector_result_id = ANY(%s)", ([r[1] for r in rows],))}
            for _, group, brand, customer, query, competitor in rows:
                if group in done_before:
                    continue  # "already migrated"
                fact = conn.execute(
                    "INSERT INTO metric_facts (collector_result_id, brand_id, customer_id, query_id, collector_type, processed_at)"
                    " VALUES (%s, %s, %s, %s, 'chatgpt', now()) ON CONFLICT (collector_result_id) DO UPDATE SET topic = metric_facts.topic RETURNING id",
                    (group, brand, customer, query),
                ).fetchone()[0]
                if competitor is not None:
                    conn.execute(
                        "INSERT INTO competitor_metrics (metric_fact_id, competitor_id) SELECT %s, id FROM brand_competitors"
                        " WHERE brand_id = %s AND competitor_name = %s ON CONFLICT DO NOTHING",
                        (fact, brand, competitor),
                    )
            offset += 100


def test_the_seeds_offset_loop_loses_rows_and_the_job_repairs_its_groups(env):
    with connect(env) as conn:
        load_example(conn)
    offset_loop_like_the_seed(env)
    with connect(env) as conn:
        lost = 1250 - counts(conn)[2]
    assert lost > 0, "the OFFSET loop over groups of 6 in pages of 100 must lose competitor rows"

    counters = migrate(env)

    with connect(env) as conn:
        assert counts(conn) == (250, 250, 1250, 240, 1200)
    assert counters["competitor_metrics_created"] == lost and counters["facts_created"] == 0
    assert counters["groups_repaired"] == 250  # every group lacked at least its brand metrics


def test_a_half_migrated_group_is_completed_and_counted(env):
    with connect(env) as conn:
        load_example(conn, groups=3, unlabelled=0)
        conn.execute(
            "INSERT INTO metric_facts (collector_result_id, brand_id, customer_id, query_id, collector_type, processed_at)"
            " SELECT collector_result_id, brand_id, customer_id, query_id, collector_type, processed_at FROM extracted_positions"
            " WHERE collector_result_id = 2 AND competitor_name IS NULL"
        )
        conn.execute("INSERT INTO brand_metrics (metric_fact_id) SELECT id FROM metric_facts")

    counters = migrate(env)

    assert created(counters) == (2, 2, 15, 3, 15) and counters["groups_repaired"] == 1
    with connect(env) as conn:
        assert counts(conn) == (3, 3, 15, 3, 15)


def test_unknown_and_ambiguous_competitors_and_labels_are_failures_of_their_rows_only(env):
    with connect(env) as conn:
        load_example(conn, groups=4, unlabelled=0)
        conn.execute("UPDATE extracted_positions SET competitor_name = 'Nobody Inc' WHERE collector_result_id = 1 AND competitor_name = 'Rival 1'")
        brand = conn.execute("SELECT brand_id FROM extracted_positions WHERE collector_result_id = 2 LIMIT 1").fetchone()[0]
        conn.execute("INSERT INTO brand_competitors (brand_id, competitor_name) VALUES (%s, 'Rival 2')", (brand,))  # now two
        conn.execute("UPDATE extracted_positions SET sentiment_label_competitor = 'meh' WHERE collector_result_id = 3 AND competitor_name = 'Rival 3'")
        conn.execute("UPDATE extracted_positions SET sentiment_label = 'positive' WHERE collector_result_id = 4 AND competitor_name IS NULL")
        conn.execute("DELETE FROM extracted_positions WHERE collector_result_id = 4 AND competitor_name = 'Rival 5'")
        conn.execute("INSERT INTO collector_results VALUES (5)")
        conn.execute(
            "INSERT INTO extracted_positions (collector_result_id, brand_id, customer_id, query_id, collector_type, processed_at, competitor_name)"
            " SELECT 5, brand_id, customer_id, query_id, collector_type, processed_at, 'Rival 1' FROM extracted_positions WHERE collector_result_id = 4 LIMIT 1"
        )

    counters = migrate(env)

    # Groups 1-4 have their fact; 5 has no brand row. Competitor rows: 20 - 1 deleted - unknown - ambiguous.
    assert created(counters) == (4, 4, 17, 4, 16)
    with connect(env) as conn:
        assert conn.execute("SELECT sentiment_label FROM brand_sentiment s JOIN metric_facts f ON f.id = s.metric_fact_id WHERE f.collector_result_id = 4").fetchall() == [("POSITIVE",)]
    found = failures(env)
    assert len(found) == 4, found
    assert any(f.startswith("brand_row_missing: collector result 5 has no brand row") for f in found)
    assert any(f.startswith("competitor_not_found: 'Nobody Inc' for brand") and f.endswith("(collector result 1)") for f in found)
    assert any(f.startswith("competitor_ambiguous: 2 competitors named 'Rival 2'") for f in found)
    assert any(f.startswith("sentiment_label_invalid: 'meh' (collector result 3)") for f in found)
    assert counters["failures"] == 4


def test_a_rerun_creates_nothing(env):
    with connect(env) as conn:
        load_example(conn, groups=20)
    assert created(migrate(env)) == (20, 20, 100, 10, 50)  # 10 of 20 groups unlabelled
    assert run_worker(env, "reset", *JOB, "--yes").returncode == 0

    again = migrate(env)

    assert created(again) == (0, 0, 0, 0, 0) and again["groups_repaired"] == 0


def test_a_dry_run_writes_nothing_and_counts_what_the_run_writes(env):
    with connect(env) as conn:
        load_example(conn, groups=30)

    would = migrate(env, "--dry-run")

    with connect(env) as conn:
        assert counts(conn) == (0, 0, 0, 0, 0)
        assert conn.execute("SELECT count(*) FROM mv_brand_daily_metrics").fetchone()[0] == 0
    assert run_worker(env, "status", *JOB).stdout.startswith("no checkpoint")
    done = migrate(env)
    assert created(would) == created(done) == (30, 30, 150, 20, 100)


def test_verify_alone_compares_read_only_and_names_what_is_missing(env):
    with connect(env) as conn:
        load_example(conn, groups=12)
    migrate(env)
    assert run_worker(env, "verify", *JOB).returncode == 0
    execute(env, "DELETE FROM competitor_metrics WHERE metric_fact_id IN (SELECT id FROM metric_facts WHERE collector_result_id IN (3, 7))")

    result = run_worker(env, "verify", *JOB, "--json")

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["by_kind"]["competitor_metrics_missing"] == {"count": 10, "examples": ["3", "3", "3", "3", "3", "7", "7", "7", "7", "7"]}
    assert report["differences"] == 10
