"""Seed 003 as a job: `embeddings`, on seed 003's tables (a schema per test, `real[]`: pgvector
is not installed here), with the project's real local model server, run as a real process."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import psycopg
import pymongo
import pytest

from tests.integration.fault_proxy import FaultProxy
from tests.integration.inventory_data import events, own_schema, run_worker, schema_connect, schema_execute
from tests.integration.kill_compare import assert_interruptions_change_nothing, counters_of
from worker import tables
from worker.demo_embeddings import load_seed_state
from worker.model_server.minilm import MiniLM, default_model_dir

JOB = ["--job", "embeddings"]


@pytest.fixture
def env(worker_env, model_server):
    with own_schema(worker_env, "emb") as (schema, env):
        env.update(
            EMBEDDING_URL=model_server.url, EMBEDDING_JOBS_TABLE=f"{schema}.jobs", EMBEDDING_QUEUE_TABLE=f"{schema}.embedding_queue",
            EMBEDDING_TOKENIZER=str(default_model_dir() / "tokenizer.json"),
            EMBEDDING_BATCH_SIZE="8", EMBEDDING_CONCURRENCY="2", BATCH_SIZE="50", BATCH_SIZE_MIN="16", BATCH_SIZE_MAX="16",
        )
        with connect(env) as conn:
            tables.fresh_schema(conn, schema, "embeddings")
        yield env


def connect(env: dict[str, str]) -> psycopg.Connection:
    return schema_connect(env, env["EMBEDDING_JOBS_TABLE"].split(".")[0])


def execute(env: dict[str, str], statement: str, *params) -> list[tuple]:
    return schema_execute(env, env["EMBEDDING_JOBS_TABLE"].split(".")[0], statement, *params)


def other_columns(env: dict[str, str]) -> str:
    """A digest of every column but `embedding`, of every job."""
    rows = execute(env, "SELECT id, job_hash, title, company, description, is_active, status, updated_at FROM jobs ORDER BY id")
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def queue(env: dict[str, str]) -> dict[int, str]:
    return dict(execute(env, "SELECT job_id, status FROM embedding_queue ORDER BY job_id"))


def embed(env: dict[str, str], *flags: str) -> dict[str, int]:
    result = run_worker(env, "run", *JOB, *flags, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout[-3000:]
    if any(f.startswith("--dry-run") for f in flags):
        [done] = [e for e in events(result.stdout) if e.get("event") == "dry run: nothing was written"]
        return done["would"]
    status, counters = counters_of(env, JOB)
    assert status == "completed"
    return counters


def test_the_seeds_state_ends_embedded_with_a_truthful_queue_through_random_kills(env, tmp_path):
    def prepare(e: dict[str, str]) -> None:
        with connect(e) as conn:
            tables.fresh_schema(conn, e["EMBEDDING_JOBS_TABLE"].split(".")[0], "embeddings")
            load_seed_state(conn, jobs=200)
        with pymongo.MongoClient(e["MONGO_URI"]) as client:
            client.drop_database(e["MONGO_DB_NAME"])

    with connect(env) as conn:
        seed = load_seed_state(conn, jobs=200)
        before = other_columns(env)
        already = dict(conn.execute("SELECT id, embedding FROM jobs WHERE embedding IS NOT NULL").fetchall())

    def state(e: dict[str, str]) -> tuple:
        embedded = execute(e, "SELECT id, is_active, array_length(embedding, 1) FROM jobs WHERE embedding IS NOT NULL ORDER BY id")
        return embedded, other_columns(e), queue(e)

    env = {**env, "SLEEP_BETWEEN_BATCHES": "0.05"}
    baseline, _ = assert_interruptions_change_nothing(env, JOB, prepare=prepare, state=state, log_dir=tmp_path / "runs", kills=3)
    embedded, others, statuses = baseline.state
    assert others == before  # no other column changed
    assert len(embedded) == seed.active and {(a, n) for _, a, n in embedded} == {(True, 384)}
    active = {i for i, *_ in embedded}
    assert set(statuses) == active and set(statuses.values()) == {"completed"}
    c = baseline.counters
    assert c["embedded"] == seed.active - seed.embedded and c["found_silent"] == seed.silent
    assert c["enqueued_missing"] == seed.unqueued
    assert c["marked_completed"] == seed.active - seed.embedded - seed.unqueued - seed.silent  # the pending ones
    assert c.get("failures", 0) == 0 and c.get("skipped_changed", 0) == 0
    # The vectors are the model's, and the embeddings that were there are untouched.
    rows = execute(env, "SELECT id, btrim(title || ' ' || coalesce(description, '')), embedding FROM jobs WHERE id IN (1, 2, 3, 13)")
    model = MiniLM()
    expected = model.embed([t for _, t, _ in rows])
    got = np.array([e for *_, e in rows], dtype=np.float32)
    assert (expected * got).sum(1).min() > 0.9999
    assert dict(execute(env, "SELECT id, embedding FROM jobs WHERE id = ANY(%s)", list(already))) == already


def test_the_seeds_upsert_fails_on_not_null_and_the_jobs_update_does_not(env):
    with connect(env) as conn:
        seed = load_seed_state(conn, jobs=20)
    vector = [0.0] * 384
    with pytest.raises(psycopg.errors.NotNullViolation, match='null value in column "job_hash"|null value in column "title"'):
        execute(env, "INSERT INTO jobs (id, embedding) VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET embedding = excluded.embedding", vector)
    assert embed(env)["embedded"] == seed.active - seed.embedded
    assert execute(env, "SELECT count(*) FROM jobs WHERE is_active AND embedding IS NOT NULL") == [(seed.active,)]


def test_provider_faults_are_ridden_out_and_a_poison_text_is_a_recorded_failure(env, model_server, tmp_path):
    with connect(env) as conn:
        load_seed_state(conn, jobs=60)
        conn.execute("UPDATE jobs SET description = 'POISON ' || coalesce(description, '') WHERE id = 17")
    proxy = FaultProxy(model_server.url, slow_seconds=3).start()
    try:
        proxy.poison = "POISON"
        # The first five answer the preflight's request (a wrong dimension there is a
        # configuration error, exit 2); the last lands on a batch's.
        proxy.once("429", "500", "slow", "short", "pass", "wrong_dimension")
        env = {**env, "EMBEDDING_URL": proxy.url, "EMBEDDING_TIMEOUT_SECONDS": "1.5", "RETRY_MAX_WAIT_SECONDS": "0.2"}
        result = run_worker(env, "run", *JOB, timeout=300)
        assert result.returncode == 0, result.stderr + result.stdout[-3000:]
    finally:
        proxy.stop()
    assert {k: proxy.requests[k] for k in ("429", "500", "slow", "short", "wrong_dimension")} == dict.fromkeys(("429", "500", "slow", "short", "wrong_dimension"), 1)
    assert proxy.requests["poison"] >= 2  # the batch holding it, then its halves down to the text alone
    retries = [e for e in events(result.stdout) if e.get("event") == "retrying"]
    assert any("429" in e["error"] and e["wait_s"] >= 1 for e in retries), retries  # Retry-After: 1 was waited
    assert any("dimensions" in e["error"] for e in retries) and any("embeddings for" in e["error"] for e in retries)
    status, counters = counters_of(env, JOB)
    assert status == "completed" and counters["failures"] == 1
    assert execute(env, "SELECT id FROM jobs WHERE is_active AND embedding IS NULL") == [(17,)]
    assert execute(env, "SELECT status, error_message FROM embedding_queue WHERE job_id = 17") == [
        ("failed", "the provider refused this job's text: This input could not be embedded")
    ]
    listed = run_worker(env, "failures", *JOB).stdout
    assert "\tembed\tkey='17'\tcode=400" in listed


def test_rows_the_application_changes_meanwhile_are_skipped_then_embedded_by_the_next_walk(env, model_server):
    with connect(env) as conn:
        seed = load_seed_state(conn, jobs=40)
    [(text,)] = execute(env, "SELECT btrim(title || ' ' || coalesce(description, '')) FROM jobs WHERE id = 3")
    theirs = [0.5] * 384

    def application(texts: list[str]) -> None:
        if text in texts:  # while the job waits for job 3's vector: its text changes, job 4 is embedded by another
            execute(env, "UPDATE jobs SET description = 'Rewritten: night shifts' WHERE id = 3")
            execute(env, "UPDATE jobs SET embedding = %s WHERE id = 4", theirs)

    proxy = FaultProxy(model_server.url).start()
    try:
        proxy.before_answer = application
        counters = embed({**env, "EMBEDDING_URL": proxy.url})
    finally:
        proxy.stop()
    assert counters["skipped_changed"] == 2 and counters["embed_walks"] == 2
    assert counters["embedded"] == seed.active - seed.embedded - 1  # job 4's is the other writer's
    assert execute(env, "SELECT embedding FROM jobs WHERE id = 4") == [(theirs,)]
    [(vector, new_text)] = execute(env, "SELECT embedding, btrim(title || ' ' || coalesce(description, '')) FROM jobs WHERE id = 3")
    assert new_text.endswith("Rewritten: night shifts")
    assert float(np.dot(MiniLM().embed([new_text])[0], np.array(vector, dtype=np.float32))) > 0.9999  # the new text's


def test_a_dry_run_calls_no_provider_and_counts_what_it_would_do(env, model_server):
    with connect(env) as conn:
        seed = load_seed_state(conn, jobs=100)
    before = execute(env, "SELECT id, embedding FROM jobs ORDER BY id"), queue(env)
    proxy = FaultProxy(model_server.url).start()
    try:
        would = embed({**env, "EMBEDDING_URL": proxy.url}, "--dry-run")
    finally:
        proxy.stop()
    assert sum(proxy.requests.values()) == 0
    assert (execute(env, "SELECT id, embedding FROM jobs ORDER BY id"), queue(env)) == before
    assert would["candidates"] == seed.active - seed.embedded and would.get("embedded", 0) == 0
    assert would["requeued_silent"] == seed.silent and would["enqueued_missing"] == seed.unqueued

    # --dry-run=calls asks the provider (to find the texts it refuses) and still writes nothing.
    proxy = FaultProxy(model_server.url).start()
    try:
        would = embed({**env, "EMBEDDING_URL": proxy.url}, "--dry-run=calls")
    finally:
        proxy.stop()
    assert proxy.embedded_texts == 1 + seed.active - seed.embedded  # the preflight's, and every candidate's
    assert (execute(env, "SELECT id, embedding FROM jobs ORDER BY id"), queue(env)) == before
    assert would["embedded"] == would["candidates"] and would.get("skipped_changed", 0) == 0


def test_status_shows_coverage(env):
    with connect(env) as conn:
        seed = load_seed_state(conn, jobs=50)
    result = run_worker(env, "status", *JOB)
    assert f"coverage: {seed.embedded}/{seed.active} ({round(100 * seed.embedded / seed.active, 2)}%)" in result.stdout, result.stdout
    embed(env)
    result = run_worker(env, "status", *JOB, "--json")
    assert json.loads(result.stdout)[0]["progress"]["coverage"] == f"{seed.active}/{seed.active} (100.0%)"


def test_a_column_of_another_dimension_and_a_refused_key_stop_before_any_write(env, model_server):
    with connect(env) as conn:
        load_seed_state(conn, jobs=20, dimensions=12)  # the embeddings there have 12 dimensions
    result = run_worker(env, "run", *JOB)
    assert result.returncode == 5 and "holds 12 dimensions, but EMBEDDING_DIMENSIONS is 384" in result.stderr
    execute(env, "UPDATE jobs SET embedding = NULL")
    proxy = FaultProxy(model_server.url).start()
    try:
        proxy.always = "401"
        result = run_worker({**env, "EMBEDDING_URL": proxy.url, "EMBEDDING_API_KEY": "sk-wrong-key-123"}, "run", *JOB)
    finally:
        proxy.stop()
    assert result.returncode == 6 and "refused EMBEDDING_API_KEY" in result.stderr
    assert "sk-wrong-key-123" not in result.stderr + result.stdout
    assert execute(env, "SELECT count(*) FROM jobs WHERE embedding IS NOT NULL") == [(0,)]
