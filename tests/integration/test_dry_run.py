"""A dry run, and `verify`, beside a real worker in the middle of the same job: every table, every
document, the collection's schema and the checkpoint stay exactly as they were."""

from __future__ import annotations

import signal
from typing import Any

import pymongo
from psycopg import sql

from tests.integration.inventory_data import (
    assert_backfilled,
    checkpoint,
    events,
    index_documents,
    index_for,
    kill,
    load,
    make_dataset,
    pg_connect,
    run_worker,
    start_worker,
    wait_for,
)


def database_state(env: dict[str, str]) -> dict[str, Any]:
    """Every table of the database (outside the catalogs) with a digest of its rows."""
    with pg_connect(env) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast%'"
        ).fetchall()
        return {
            f"{schema}.{name}": conn.execute(
                sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {} t").format(
                    sql.Identifier(schema, name)
                )
            ).fetchone()
            for schema, name in tables
        }


def state(env: dict[str, str]) -> dict[str, Any]:
    cp = checkpoint(env)
    cp.pop("lease")  # the running worker's heartbeat renews it
    with pymongo.MongoClient(env["MONGO_URI"]) as client:
        collections = sorted(client[env["MONGO_DB_NAME"]].list_collection_names())
    return {
        "tables": database_state(env),
        "documents": index_documents(env),
        "schema": index_for(env).schema()["fields"],
        "checkpoint": cp,
        "mongo_collections": collections,
    }


def test_a_dry_run_and_verify_beside_a_running_worker_change_nothing(worker_env, tmp_path):
    data = make_dataset(2000)
    load(worker_env, data)
    worker_env.update(BATCH_SIZE="100", BATCH_SIZE_MAX="100", SLEEP_BETWEEN_BATCHES="30")
    real = start_worker(worker_env, log_path=tmp_path / "real.log")
    wait_for(lambda: (checkpoint(worker_env) or {}).get("batch_no", 0) >= 1, 60, what="the real worker's first batch")
    scratch = worker_env["SCRATCH_TABLE"]
    wait_for(lambda: scratch in database_state(worker_env), 30, what="the real worker's scratch table")
    before = state(worker_env)

    quick = dict(worker_env, SLEEP_BETWEEN_BATCHES="0", BATCH_SIZE_MAX="100000")
    dry = run_worker(quick, "run", "--dry-run", timeout=120)
    verified = run_worker(quick, "verify", "--json", timeout=120)

    assert dry.returncode == 0, dry.stderr
    [report] = [e for e in events(dry.stdout) if e["event"] == "dry run: nothing was written"]
    assert report["would"]["reconcile_passes"] == 1, "the dry run went through the reconcile phase too"
    assert report["would"]["reconciled_pg_rows"] > 0, "it counts what reconcile would repair"
    assert verified.returncode == 1, verified.stdout + verified.stderr  # the real job is half done
    assert state(worker_env) == before
    assert real.poll() is None and checkpoint(worker_env)["batch_no"] == before["checkpoint"]["batch_no"]

    assert kill(real, signal.SIGTERM) == 0
    worker_env["SLEEP_BETWEEN_BATCHES"] = "0"
    assert run_worker(worker_env).returncode == 0
    assert_backfilled(worker_env, data)
    assert run_worker(worker_env, "verify").returncode == 0
