"""The load guard against a real busy Postgres: the worker pauses, says why, and resumes."""

from __future__ import annotations

import threading

from tests.integration.inventory_data import (
    assert_backfilled,
    checkpoint,
    events,
    load,
    make_dataset,
    pg_connect,
    start_worker,
    wait_for,
)


def test_pauses_while_postgres_is_busy_and_logs_why(worker_env, tmp_path):
    data = make_dataset(2000)
    load(worker_env, data)
    worker_env.update(BATCH_SIZE="100", BATCH_SIZE_MAX="100", THROTTLE_CHECK_SECONDS="0", THROTTLE_PG_MAX_ACTIVE="2")
    busy_seconds = 4
    sessions = [pg_connect(worker_env) for _ in range(3)]
    queries = [threading.Thread(target=s.execute, args=(f"SELECT pg_sleep({busy_seconds})",)) for s in sessions]
    for query in queries:
        query.start()
    log = tmp_path / "w.log"

    proc = start_worker(worker_env, log_path=log)
    wait_for(lambda: "throttled" in log.read_text(), 30, what="the worker to pause")
    paused_at = (checkpoint(worker_env) or {}).get("batch_no", 0)
    for query in queries:
        query.join()
    assert proc.wait(timeout=120) == 0
    for session in sessions:
        session.close()

    logged = events(log.read_text())
    throttled = next(e for e in logged if e["event"] == "throttled")
    assert any(r.startswith("postgres active=") for r in throttled["reasons"])
    lifted = next(e for e in logged if e["event"] == "throttle lifted")
    assert lifted["paused_s"] >= 1
    assert paused_at == 0, "no batch runs while the server is busy"
    assert_backfilled(worker_env, data)
