"""The job lease on the real MongoDB checkpoint store, `reset` against a live lease, and a real
worker whose lease is taken over mid-job."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pymongo
import pytest
from psycopg import sql

from tests.integration.inventory_data import (
    assert_backfilled,
    checkpoint,
    events,
    index_documents,
    load,
    make_dataset,
    pg_connect,
    pg_rows,
    run_worker,
    start_worker,
    table_parts,
    wait_for,
)
from worker import lease
from worker.checkpoint import MongoCheckpointStore
from worker.exceptions import LeaseHeld, LeaseLost

CHECKPOINT_ID = "backfill_inventory_fields"
SUCCESSOR = "successor-host:1:0123456789ab"


@pytest.fixture
def checkpoints(worker_env):
    """The checkpoint collection the worker run with `worker_env` uses."""
    with pymongo.MongoClient(worker_env["MONGO_URI"], serverSelectionTimeoutMS=5000, tz_aware=True) as client:
        yield client[worker_env["MONGO_DB_NAME"]]["inventory_backfill_checkpoint"]


def test_same_host_and_pid_with_different_nonces_do_not_both_acquire(checkpoints, monkeypatch):
    # Two containers with one hostname, each worker pid 7 under tini.
    monkeypatch.setattr(lease.socket, "gethostname", lambda: "worker")
    monkeypatch.setattr(lease.os, "getpid", lambda: 7)
    first, second = lease.default_owner(), lease.default_owner()
    assert first.startswith("worker:7:") and second.startswith("worker:7:") and first != second
    store = MongoCheckpointStore(checkpoints)

    cp = store.acquire(CHECKPOINT_ID, "inventory_fields", first, 60)
    with pytest.raises(LeaseHeld) as held:
        store.acquire(CHECKPOINT_ID, "inventory_fields", second, 60)

    assert held.value.owner == first
    assert not store.renew(CHECKPOINT_ID, second, 60)
    with pytest.raises(LeaseLost):
        store.save(cp, second, 60)
    assert store.lease_of(CHECKPOINT_ID)["owner"] == first


def test_save_raises_lease_lost_when_the_owner_differs_and_writes_nothing(checkpoints):
    store = MongoCheckpointStore(checkpoints)
    me = lease.default_owner()
    cp = store.acquire(CHECKPOINT_ID, "inventory_fields", me, 60)
    cp.phase, cp.last_id, cp.batch_no, cp.counters = "products", 40, 2, {"rows_scanned": 40}
    store.save(cp, me, 60)
    successor_lease = {"owner": SUCCESSOR, "expires_at": datetime.now(timezone.utc) + timedelta(seconds=60)}
    checkpoints.update_one({"_id": CHECKPOINT_ID}, {"$set": {"lease": successor_lease}})
    before = checkpoints.find_one({"_id": CHECKPOINT_ID})

    cp.last_id, cp.batch_no, cp.counters = 60, 3, {"rows_scanned": 60}
    with pytest.raises(LeaseLost, match="lease lost to another worker"):
        store.save(cp, me, 60)

    assert checkpoints.find_one({"_id": CHECKPOINT_ID}) == before
    assert before["last_id"] == 40 and before["lease"]["owner"] == SUCCESSOR
    assert cp.version == before["version"], "the in-memory checkpoint does not count the refused save"
    assert not store.renew(CHECKPOINT_ID, me, 60)
    store.release(CHECKPOINT_ID, me)
    assert store.lease_of(CHECKPOINT_ID)["owner"] == SUCCESSOR, "release leaves another owner's lease alone"


def reset(env, *extra):
    return run_worker(env, "reset", "--job", "inventory_fields", "--yes", *extra, timeout=60)


def test_reset_refuses_while_another_worker_holds_a_live_lease(worker_env, checkpoints):
    MongoCheckpointStore(checkpoints).acquire(CHECKPOINT_ID, "inventory_fields", SUCCESSOR, 60)
    expires_at = checkpoints.find_one({"_id": CHECKPOINT_ID})["lease"]["expires_at"]

    refused = reset(worker_env)

    assert refused.returncode == 3
    message = refused.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert SUCCESSOR in message and str(expires_at.year) in message and "--break-lease" in message
    assert checkpoint(worker_env) is not None, "the checkpoint is still there"

    forced = reset(worker_env, "--force")
    assert forced.returncode == 0, forced.stderr
    assert checkpoint(worker_env) is None


def test_reset_deletes_a_checkpoint_whose_lease_is_free_or_expired(worker_env, checkpoints):
    store = MongoCheckpointStore(checkpoints)
    store.acquire(CHECKPOINT_ID, "inventory_fields", SUCCESSOR, 60)
    checkpoints.update_one(
        {"_id": CHECKPOINT_ID}, {"$set": {"lease.expires_at": datetime.now(timezone.utc) - timedelta(seconds=1)}}
    )
    assert reset(worker_env).returncode == 0
    assert checkpoint(worker_env) is None

    store.acquire(CHECKPOINT_ID, "inventory_fields", SUCCESSOR, 60)
    store.release(CHECKPOINT_ID, SUCCESSOR)
    assert reset(worker_env).returncode == 0
    assert checkpoint(worker_env) is None


def slow_worker_env(env):
    # 20-row batches, one at a time, half a second apart: about 25 s for 1,000 products.
    env.update(BATCH_SIZE="20", BATCH_SIZE_MAX="20", SLEEP_BETWEEN_BATCHES="0.5", LEASE_TTL_SECONDS="3")
    return env


def in_products_phase(env, batches):
    def reached():
        cp = checkpoint(env) or {}
        return cp.get("phase") == "products" and cp.get("batch_no", 0) >= batches

    return reached


def waiting_on_a_lock(env) -> bool:
    """Whether a statement on the products table is blocked by a lock (the worker's UPDATE)."""
    with pg_connect(env) as conn:
        return conn.execute(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND pid <> pg_backend_pid() AND query ILIKE %s",
            (f"%{table_parts(env)[1]}%",),
        ).fetchone()[0]


@pytest.mark.parametrize("moment", ["between batches", "while a batch writes"])
def test_a_worker_whose_lease_is_taken_over_stops_without_another_write(moment, worker_env, checkpoints, tmp_path):
    env = slow_worker_env(worker_env)
    data = make_dataset(1000)
    load(env, data)
    log = tmp_path / "old.log"
    old = start_worker(env, log_path=log)
    try:
        check_takeover(moment, env, data, old, log, checkpoints)
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()


def check_takeover(moment, env, data, old, log, checkpoints):
    wait_for(in_products_phase(env, 3), 60, what="a few product batches")
    blocker = None
    if moment == "while a batch writes":
        # Reads go on; the next batch's UPDATE waits for this lock, its intent already saved.
        blocker = pg_connect(env)
        blocker.autocommit = False
        blocker.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.Identifier(*table_parts(env))))
        wait_for(lambda: waiting_on_a_lock(env), 30, what="the worker's UPDATE to wait on the lock")

    # A successor takes the job over: the document as it is at that instant is what it resumes from.
    successor_lease = {"owner": SUCCESSOR, "expires_at": datetime.now(timezone.utc) + timedelta(seconds=120)}
    at_takeover = checkpoints.find_one_and_update(
        {"_id": CHECKPOINT_ID}, {"$set": {"lease": successor_lease}}, return_document=pymongo.ReturnDocument.AFTER
    )
    rows_at_takeover, documents_at_takeover = pg_rows(env), index_documents(env)
    if blocker is not None:
        try:
            time.sleep(1.5)  # the heartbeat (every ttl/3 = 1 s) finds the lease gone while the batch waits
            assert old.poll() is None, "a batch in flight is finished, not abandoned mid-write"
        finally:
            blocker.rollback()
            blocker.close()
    taken_over = time.monotonic()

    code = old.wait(timeout=30)
    elapsed = time.monotonic() - taken_over

    output = log.read_text()
    assert code == 3, output[-3000:]
    assert elapsed < 5, f"took {elapsed:.1f}s to stop"
    assert "LeaseLost" in output and "lease lost to another worker" in output
    after = checkpoints.find_one({"_id": CHECKPOINT_ID})
    for name in ("version", "last_id", "batch_no", "counters", "intents", "status", "updated_at", "lease"):
        assert after[name] == at_takeover[name], f"{name} was written after the takeover"
    assert after == at_takeover
    assert at_takeover["status"] == "running" and at_takeover["phase"] == "products"
    if blocker is not None:
        assert len(at_takeover["intents"]) == 1, "a batch was in flight at the takeover"

    # A batch already writing at the takeover is rolled back once the worker knows (the sink
    # checks before each commit and import): the batch held on the lock writes nothing. Between
    # batches, one may have been writing in the moment before the heartbeat found out: only its
    # rows and documents may change (its intent was saved while the lease was its own, and the
    # successor redoes it).
    assert len(at_takeover["intents"]) <= 1, "batches run one at a time with a pause between them"
    in_flight = set() if blocker is not None else {
        str(k) for i in at_takeover["intents"] for k in range(int(i["from_id"] or 0) + 1, int(i["to_id"]) + 1)
    }

    def may_change(key: str) -> bool:
        return key in in_flight

    rows_after, documents_after = pg_rows(env), index_documents(env)
    assert {k: v for k, v in rows_after.items() if not may_change(k)} == {
        k: v for k, v in rows_at_takeover.items() if not may_change(k)
    }, "a row outside the batch in flight was written after the takeover"
    assert {k: d for k, d in documents_after.items() if not may_change(k)} == {
        k: d for k, d in documents_at_takeover.items() if not may_change(k)
    }, "a document outside the batch in flight was written after the takeover"
    ahead = [k for k, v in rows_after.items() if v is None and int(k) > int(at_takeover["last_id"]) and not may_change(k)]
    assert len(ahead) > 100, "there was work left that a worker ignoring the takeover would have done"
    assert [e["batch_no"] for e in events(output) if e["event"] == "batch"][-1] <= at_takeover["batch_no"]

    # The successor's lease runs out; the next worker finishes the job from that checkpoint.
    checkpoints.update_one({"_id": CHECKPOINT_ID}, {"$set": {"lease.expires_at": datetime.now(timezone.utc)}})
    env.update(SLEEP_BETWEEN_BATCHES="0", BATCH_SIZE_MAX="100000")
    finished = run_worker(env)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert_backfilled(env, data)
    final = checkpoint(env)
    assert final["status"] == "completed" and final["counters"] == data.expected_counters()


def test_reset_force_under_a_running_worker_stops_it_with_lease_lost(worker_env, tmp_path):
    env = slow_worker_env(worker_env)
    load(env, make_dataset(1000))
    log = tmp_path / "w.log"
    proc = start_worker(env, log_path=log)
    wait_for(in_products_phase(env, 2), 60, what="a few product batches")

    refused = reset(env)
    assert refused.returncode == 3 and ":" + str(proc.pid) + ":" in refused.stderr
    assert reset(env, "--force").returncode == 0

    assert proc.wait(timeout=30) == 3
    assert "LeaseLost" in log.read_text()
    assert checkpoint(env) is None, "the stopped worker did not write its checkpoint back"


def resumed_by_another(env, owner_pid: int):
    def resumed():
        cp = checkpoint(env) or {}
        holder = (cp.get("lease") or {}).get("owner", "")
        return holder and f":{owner_pid}:" not in holder

    return resumed


def test_a_worker_killed_with_sigkill_is_taken_over_at_once_by_the_next_start_on_its_machine(worker_env, tmp_path):
    env = slow_worker_env(worker_env)
    env.update(LEASE_TTL_SECONDS="60", SLEEP_BETWEEN_BATCHES="0.1", TMPDIR=str(tmp_path))
    data = make_dataset(1000)
    load(env, data)
    old = start_worker(env, log_path=tmp_path / "old.log")
    wait_for(in_products_phase(env, 3), 60, what="a few product batches")
    old.kill()
    old.wait()
    at_kill = checkpoint(env)
    assert f":{old.pid}:" in at_kill["lease"]["owner"], "the dead worker's 60 s lease is still there"

    killed = time.monotonic()
    log = tmp_path / "new.log"
    new = start_worker(env, log_path=log)
    try:
        wait_for(resumed_by_another(env, old.pid), 30, what="the next worker to take the lease")
        took = time.monotonic() - killed
        assert new.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if new.poll() is None:
            new.kill()
    output = log.read_text()
    assert took < 10, f"took {took:.1f}s to take over a 60 s lease from a dead holder"
    assert "taken over at once" in output and "waiting for it to expire" not in output, output[-3000:]
    assert_backfilled(env, data)
    assert checkpoint(env)["counters"] == data.expected_counters()


def test_a_holder_this_machine_never_saw_is_waited_out(worker_env, checkpoints, tmp_path):
    # A lease of a worker on another machine (or in another container): no claim file names it.
    MongoCheckpointStore(checkpoints).acquire(CHECKPOINT_ID, "inventory_fields", SUCCESSOR, 60)
    env = {**worker_env, "LEASE_TTL_SECONDS": "1", "TMPDIR": str(tmp_path)}
    load(env, make_dataset(20))

    refused = run_worker(env, timeout=60)

    assert refused.returncode == 3, refused.stdout[-3000:] + refused.stderr
    assert "waiting for it to expire" in refused.stdout and "taken over" not in refused.stdout
    assert checkpoints.find_one({"_id": CHECKPOINT_ID})["lease"]["owner"] == SUCCESSOR
