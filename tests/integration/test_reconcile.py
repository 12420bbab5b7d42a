"""The reconcile phase and `verify` on differences made by hand, one of each kind, after a run
without reconcile: the worker then resumes at the reconcile phase, as after a crash there."""

from __future__ import annotations

import json

import pymongo

from tests.integration.inventory_data import (
    DELETED_AT,
    checkpoint,
    events,
    index_documents,
    index_for,
    load,
    make_dataset,
    pg_rows,
    products_sql,
    run_worker,
)
from utils.typesense import EncodedDocuments


def run_without_reconcile_then_resume_at_it(env: dict[str, str]) -> None:
    """A completed run with RECONCILE_MAX_PASSES=0, its checkpoint then put where a worker
    stopped as the reconcile phase began leaves it."""
    assert run_worker(dict(env, RECONCILE_MAX_PASSES="0")).returncode == 0
    with pymongo.MongoClient(env["MONGO_URI"]) as client:
        client[env["MONGO_DB_NAME"]]["inventory_backfill_checkpoint"].update_one(
            {"_id": "backfill_inventory_fields"},
            {"$set": {"status": "interrupted", "phase": "reconcile", "last_id": None, "phase_done": 0,
                      "phase_pass": 1, "phase_counters": {}, "intents": []}},
        )


def verify(env: dict[str, str]) -> tuple[int, dict]:
    done = run_worker(env, "verify", "--json")
    return done.returncode, json.loads(done.stdout)


def test_each_kind_of_difference_is_found_repaired_and_verified(worker_env):
    data = make_dataset(300)
    load(worker_env, data)
    worker_env.update(BATCH_SIZE="64", BATCH_SIZE_MAX="64")  # several ranges: first, middle and last differ
    run_without_reconcile_then_resume_at_it(worker_env)
    # The application, meanwhile: a row inserted with NULL deleted_at behind the cursor (no
    # document), a product deleted in Postgres whose document was overwritten with the old
    # value, and a document with no product row and no fields.
    products_sql(worker_env, "INSERT INTO {t} (id, created_at, deleted_at) VALUES (100000, now(), NULL)")
    products_sql(worker_env, "UPDATE {t} SET deleted_at = %s WHERE id = 3", DELETED_AT + 3)
    index = index_for(worker_env)
    index.import_documents(EncodedDocuments.from_dicts([{"id": "late-orphan", "name": "x"}]), "create")

    code, report = verify(worker_env)

    assert code == 1 and report["differences"] == 3
    assert {k: (v["count"], v["examples"]) for k, v in report["by_kind"].items()} == {
        "pg_deleted_at_null": (1, ["100000"]),
        "document_differs": (1, ["3"]),
        "index_only_without_defaults": (1, ["late-orphan"]),
    }

    done = run_worker(worker_env)

    assert done.returncode == 0, done.stderr
    cp = checkpoint(worker_env)
    assert cp["status"] == "completed"
    assert {k: cp["counters"][k] for k in ("reconciled_pg_rows", "reconciled_documents", "reconcile_passes")} == {
        "reconciled_pg_rows": 1, "reconciled_documents": 2, "reconcile_passes": 2,
    }
    passes = [e["counters"] for e in events(done.stdout) if e["event"] == "phase done" and e["phase"] == "reconcile"]
    assert [p.get("reconciled_documents") for p in passes] == [2, 0]
    assert pg_rows(worker_env)["100000"] == 0
    docs = index_documents(worker_env)
    assert docs["3"]["deleted_at"] == DELETED_AT + 3
    assert (docs["late-orphan"]["created_at"], docs["late-orphan"]["deleted_at"]) == (0, 0)
    code, report = verify(worker_env)
    assert (code, report["differences"]) == (0, 0)


def test_a_difference_reconcile_cannot_repair_is_recorded_once_and_retried_after_the_fix(worker_env):
    data = make_dataset(200)
    load(worker_env, data)
    run_without_reconcile_then_resume_at_it(worker_env)
    products_sql(worker_env, "INSERT INTO {t} (id, created_at, deleted_at) VALUES (100000, now(), NULL)")
    products_sql(worker_env, "ALTER TABLE {t} ADD CONSTRAINT keep_null CHECK (id <> 100000 OR deleted_at IS NULL)")

    done = run_worker(worker_env)

    assert done.returncode == 0, done.stderr
    cp = checkpoint(worker_env)
    # Pass 1 records the failure; pass 2 leaves the recorded row to `retry` and finds nothing.
    assert cp["status"] == "completed" and cp["counters"]["reconcile_passes"] == 2
    assert cp["counters"]["failures"] == 1
    listed = run_worker(worker_env, "failures").stdout
    assert "reconcile\tkey='100000'" in listed and "CheckViolation" in listed
    assert verify(worker_env)[1]["by_kind"]["pg_deleted_at_null"]["examples"] == ["100000"], "verify still sees it"

    products_sql(worker_env, "ALTER TABLE {t} DROP CONSTRAINT keep_null")
    retried = run_worker(worker_env, "retry", "--job", "inventory_fields")

    assert retried.returncode == 0, retried.stderr
    assert pg_rows(worker_env)["100000"] == 0
    assert checkpoint(worker_env)["counters"]["failures"] == 0
    assert "no failures recorded" in run_worker(worker_env, "failures").stdout
    assert verify(worker_env)[0] == 0
