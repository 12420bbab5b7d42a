"""The inventory_fields job end to end: the worker runs as a real process against real servers."""

from __future__ import annotations

import random
import signal
import threading
import time

import pymongo
import pytest

from utils.typesense import EncodedDocuments
from worker.config import load_settings
from worker.jobs.inventory_fields import DefaultIndexOnly, EnsureSchema, InventoryFieldsJob
from worker.resources import Resources
from worker.stop import StopFlag, StopRequested

from tests.integration.inventory_data import (
    assert_backfilled,
    checkpoint,
    events,
    index_documents,
    kill,
    load,
    make_dataset,
    pg_rows,
    run_worker,
    start_worker,
    wait_for,
)


@pytest.mark.parametrize("key_type", ["int", "uuid", "text"])
def test_full_run_leaves_both_stores_right(worker_env, key_type):
    data = make_dataset(300, key_type)
    load(worker_env, data)
    worker_env["BATCH_SIZE"] = "40"

    done = run_worker(worker_env)

    assert done.returncode == 0, done.stderr
    assert_backfilled(worker_env, data)
    cp = checkpoint(worker_env)
    assert cp["status"] == "completed"
    assert cp["counters"] == data.expected_counters()
    assert cp["lease"] is None, "a finished worker releases its lease"


def test_deleted_products_stay_deleted_and_index_only_values_already_set_are_kept(worker_env):
    data = make_dataset(120, "int", index_has_fields=True)
    load(worker_env, data)
    deleted = [str(k) for k, _, d in data.products if d and d > 0]
    assert deleted, "the data set must hold deleted products"

    assert run_worker(worker_env).returncode == 0

    docs = index_documents(worker_env)
    for key in deleted:
        if key in docs:
            assert docs[key]["deleted_at"] == pg_rows(worker_env)[key] > 0
    assert docs[data.index_only_ids[0]]["created_at"] == 123
    assert_backfilled(worker_env, data)
    assert checkpoint(worker_env)["counters"] == data.expected_counters()


def test_rerun_changes_nothing_and_a_reset_run_only_confirms(worker_env):
    data = make_dataset(150)
    load(worker_env, data)
    assert run_worker(worker_env).returncode == 0
    first = checkpoint(worker_env)

    again = run_worker(worker_env)
    assert again.returncode == 0
    assert any(e["event"] == "already completed; nothing to do" for e in events(again.stdout))
    assert not [e for e in events(again.stdout) if e["event"] == "batch"]
    after = checkpoint(worker_env)
    assert (after["version"], after["counters"]) == (first["version"], first["counters"]), "nothing saved"
    assert_backfilled(worker_env, data)

    assert run_worker(worker_env, "reset", "--job", "inventory_fields", "--yes").returncode == 0
    assert checkpoint(worker_env) is None
    redo = run_worker(worker_env)
    assert redo.returncode == 0
    assert_backfilled(worker_env, data)
    counters = checkpoint(worker_env)["counters"]
    assert counters["pg_rows_updated"] == 0, "nothing is left to normalise in Postgres"
    assert counters["index_only_defaulted"] == 0 and counters["index_fields_added"] == 0


def test_empty_table_completes(worker_env):
    data = make_dataset(0)
    load(worker_env, data)
    done = run_worker(worker_env)
    assert done.returncode == 0, done.stderr
    assert_backfilled(worker_env, data)
    counters = checkpoint(worker_env)["counters"]
    assert counters["index_only_defaulted"] == len(data.documents)
    assert counters.get("rows_scanned", 0) == 0


def test_dry_run_writes_nothing_and_reports_what_it_would_do(worker_env):
    data = make_dataset(100)
    load(worker_env, data)
    rows_before, docs_before = pg_rows(worker_env), index_documents(worker_env)

    dry = run_worker(worker_env, "run", "--dry-run")

    assert dry.returncode == 0, dry.stderr
    assert pg_rows(worker_env) == rows_before
    assert index_documents(worker_env) == docs_before
    assert checkpoint(worker_env) is None
    report = [e for e in events(dry.stdout) if e["event"] == "dry run: nothing was written"][0]
    expected = data.expected_counters()
    for name in ("rows_scanned", "pg_rows_updated", "missing_in_index", "index_docs_updated"):
        assert report["would"][name] == expected[name], name
    # the same through the environment variable
    worker_env["DRY_RUN"] = "true"
    assert run_worker(worker_env).returncode == 0
    assert pg_rows(worker_env) == rows_before and checkpoint(worker_env) is None


def test_sigkill_at_a_random_batch_then_restart_redoes_no_completed_batch(worker_env, tmp_path):
    data = make_dataset(1500)
    load(worker_env, data)
    worker_env.update(BATCH_SIZE="50", BATCH_SIZE_MAX="50", SLEEP_BETWEEN_BATCHES="0.02")  # 30 product batches
    target = random.Random().randint(2, 25)
    log = tmp_path / "worker.log"

    proc = start_worker(worker_env, log_path=log)
    wait_for(lambda: (checkpoint(worker_env) or {}).get("batch_no", 0) >= target, 60, what=f"batch {target}")
    kill(proc, signal.SIGKILL)
    at_kill = checkpoint(worker_env)
    first_run_lines = len(log.read_text().splitlines())

    proc = start_worker(worker_env, log_path=log)
    assert proc.wait(timeout=120) == 0

    restart_batches = [e for e in events("\n".join(log.read_text().splitlines()[first_run_lines:])) if e["event"] == "batch"]
    first = restart_batches[0]
    assert first["batch_no"] == at_kill["batch_no"] + 1, (target, at_kill["batch_no"])
    if first["phase"] == at_kill["phase"]:
        assert first["from_id"] == at_kill["last_id"], "the restart must begin right after the checkpoint"
    assert_backfilled(worker_env, data)
    assert checkpoint(worker_env)["status"] == "completed"


def test_sigterm_during_the_sleep_saves_and_exits_0_quickly(worker_env, tmp_path):
    data = make_dataset(400)
    load(worker_env, data)
    worker_env.update(BATCH_SIZE="50", SLEEP_BETWEEN_BATCHES="30")
    proc = start_worker(worker_env, log_path=tmp_path / "w.log")
    wait_for(lambda: (checkpoint(worker_env) or {}).get("batch_no", 0) >= 1, 60, what="first batch")
    time.sleep(0.3)  # now inside the 30 s sleep

    started = time.monotonic()
    code = kill(proc, signal.SIGTERM)
    elapsed = time.monotonic() - started

    assert code == 0
    assert elapsed < 5, f"took {elapsed:.1f}s to stop"
    cp = checkpoint(worker_env)
    assert cp["status"] == "interrupted"
    assert cp["batch_no"] == 1 and cp["lease"] is None
    worker_env["SLEEP_BETWEEN_BATCHES"] = "0"
    assert run_worker(worker_env).returncode == 0
    assert_backfilled(worker_env, data)


def test_a_second_worker_on_the_same_job_waits_then_gives_up(worker_env, tmp_path):
    data = make_dataset(200)
    load(worker_env, data)
    worker_env.update(BATCH_SIZE="20", SLEEP_BETWEEN_BATCHES="5", LEASE_TTL_SECONDS="60")
    first = start_worker(worker_env, log_path=tmp_path / "first.log")
    wait_for(lambda: (checkpoint(worker_env) or {}).get("batch_no", 0) >= 1, 60, what="first batch")
    worker_env["LEASE_TTL_SECONDS"] = "1"  # the second one gives up after 2 x 1 + 5 s

    second = run_worker(worker_env, timeout=60)

    assert second.returncode == 3
    assert "is being run by" in second.stderr

    worker_env["LEASE_TTL_SECONDS"] = "60"  # this one would wait two minutes: stop it while it waits
    third_log = tmp_path / "third.log"
    third = start_worker(worker_env, log_path=third_log)
    wait_for(lambda: "lease held by another worker" in third_log.read_text(), 30, what="third worker waiting")
    assert kill(third, signal.SIGTERM) == 0
    assert kill(first, signal.SIGTERM) == 0
    assert checkpoint(worker_env)["status"] == "interrupted"


def test_bad_configuration_exits_2_naming_the_variable_without_secrets(worker_env):
    worker_env["BATCH_SIZE"] = "-5"
    bad = run_worker(worker_env)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()], "one line"
    assert "BATCH_SIZE" in bad.stderr
    for secret in (worker_env["DB_PASSWORD"], worker_env["TYPESENSE_API_KEY"]):
        assert secret not in bad.stderr + bad.stdout

    worker_env.update(BATCH_SIZE="100", JOB="no_such_job")
    unknown = run_worker(worker_env)
    assert unknown.returncode == 2 and "JOB" in unknown.stderr and "inventory_fields" in unknown.stderr


def test_logs_never_show_secrets_even_when_a_server_refuses(worker_env):
    data = make_dataset(50)
    load(worker_env, data)
    ok = run_worker(worker_env)
    wrong_key = dict(worker_env, TYPESENSE_API_KEY="wrong-key-do-not-print", MONGO_DB_NAME=worker_env["MONGO_DB_NAME"] + "b")
    refused = run_worker(wrong_key)
    assert refused.returncode == 6
    assert "TYPESENSE_API_KEY" in refused.stderr
    for run, secrets in ((ok, (worker_env["DB_PASSWORD"], worker_env["TYPESENSE_API_KEY"])), (refused, ("wrong-key-do-not-print", worker_env["DB_PASSWORD"]))):
        for secret in secrets:
            assert secret not in run.stdout + run.stderr


def test_status_prints_the_checkpoint(worker_env):
    data = make_dataset(60)
    load(worker_env, data)
    assert run_worker(worker_env).returncode == 0
    status = run_worker(worker_env, "status")
    assert status.returncode == 0
    for text in ("backfill_inventory_fields", "completed", "index_only", "100.0%", "rows_scanned", "lease: free"):
        assert text in status.stdout, text


def test_a_document_the_index_rejects_is_recorded_not_dropped(worker_env):
    data = make_dataset(80, "text")
    data.products.append(("", None, None))  # a text key Typesense refuses as a document id
    load(worker_env, data)

    done = run_worker(worker_env)

    assert done.returncode == 0, done.stderr
    counters = checkpoint(worker_env)["counters"]
    expected = data.expected_counters()
    assert counters["failures"] == 1
    assert counters["missing_in_index"] == expected["missing_in_index"] - 1
    assert pg_rows(worker_env)[""] == 0, "the Postgres side of the bad row is still normalised"
    with pymongo.MongoClient(worker_env["MONGO_URI"]) as client:
        failures = list(client[worker_env["MONGO_DB_NAME"]]["inventory_backfill_failures"].find())
    assert len(failures) == 1
    assert failures[0]["phase"] == "products" and failures[0]["key"] == ""
    assert failures[0]["code"] == 400 and "id" in failures[0]["error"]


def test_a_stop_while_the_scratch_table_loads_rolls_the_load_back(worker_env, monkeypatch):
    """The index_only phase loads its scratch table from the job's start, alongside the phases
    before it; a stop then ends the load part way. The load is one transaction: a stop that
    lands once the new table is built (here: right after the export's last chunk) leaves the
    earlier table exactly as it was, and the next start redoes the load. (In-process: the load
    takes a fraction of a second, too short a window to land a signal in from outside.)"""
    data = make_dataset(20_000)
    load(worker_env, data)
    stop = StopFlag()
    with Resources.open(load_settings(worker_env), InventoryFieldsJob.stores) as resources:
        ctx = resources.job_context(stop, InventoryFieldsJob.read_settings(worker_env))
        index_only = InventoryFieldsJob(ctx).phases()[2]
        index_only.prepare(False)  # an earlier start's table
        earlier = index_only.count()
        ctx.index.import_documents(EncodedDocuments.from_dicts([{"id": "added-later", "name": "x"}]), "create")
        export_lines = ctx.index.export_lines

        def export_then_stop(fields):
            yield from export_lines(fields)
            stop.request("SIGTERM")

        monkeypatch.setattr(ctx.index, "export_lines", export_then_stop)
        with pytest.raises(StopRequested):
            index_only.prepare(False)
        assert index_only.count() == earlier == len(data.documents), "the earlier table, neither dropped nor replaced"
    data.documents.append({"id": "added-later", "name": "x"})
    data.index_only_ids.append("added-later")
    assert run_worker(worker_env).returncode == 0
    assert_backfilled(worker_env, data)
    assert checkpoint(worker_env)["counters"] == data.expected_counters()


def test_index_only_rows_read_back_for_a_retry_are_flagged_as_the_walk_flags_them(worker_env):
    """`retry` re-reads failed index_only documents from the index (the scratch table is gone by
    then) and must tell product documents from index-only ones by the same rule as the walk."""
    data = make_dataset(60, "int")
    load(worker_env, data)
    with Resources.open(load_settings(worker_env), InventoryFieldsJob.stores) as resources:
        phases = InventoryFieldsJob(resources.job_context(StopFlag(), InventoryFieldsJob.read_settings(worker_env))).phases()
        index_only = next(p for p in phases if isinstance(p, DefaultIndexOnly))
        asked = [*data.index_only_ids, "5", "no-such-document"]
        rows = index_only.fetch_keys(asked)

    assert [row[0] for row in rows] == sorted(set(asked) - {"no-such-document"})
    assert {row[0]: row[3] for row in rows} == {i: i != "5" for i in asked if i != "no-such-document"}
    assert "05" in data.index_only_ids


def test_ensure_schema_changes_the_index_once_the_early_export_streams(worker_env):
    """Typesense holds an export back until a schema change has finished: the schema change waits
    for the index_only phase's early export to stream first, so that export reads alongside it."""
    data = make_dataset(60, "int")
    load(worker_env, data)
    with Resources.open(load_settings(worker_env), InventoryFieldsJob.stores) as resources:
        ensure, _, index_only, *_ = InventoryFieldsJob(resources.job_context(StopFlag(), InventoryFieldsJob.read_settings(worker_env))).phases()
        altering = threading.Thread(target=ensure.run)
        altering.start()
        altering.join(1.0)
        assert altering.is_alive(), "the schema change went ahead of the export"
        assert len(ensure.missing_fields()) == 2

        index_only.prepare(False)
        altering.join(10.0)
        assert not altering.is_alive()
        assert ensure.missing_fields() == []
        assert index_only.count() == len(data.documents)


def test_ensure_schema_waits_for_an_export_that_never_starts_only_so_long(worker_env, monkeypatch):
    monkeypatch.setattr(EnsureSchema, "export_wait_seconds", 0.5)
    load(worker_env, make_dataset(10, "int"))
    with Resources.open(load_settings(worker_env), InventoryFieldsJob.stores) as resources:
        ensure = InventoryFieldsJob(resources.job_context(StopFlag(), InventoryFieldsJob.read_settings(worker_env))).phases()[0]
        started = time.monotonic()
        ensure.run()
        assert time.monotonic() - started >= 0.5
        assert ensure.missing_fields() == []
