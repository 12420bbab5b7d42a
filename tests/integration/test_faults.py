"""Servers failing under a running worker: real servers stopped and started by the test."""

from __future__ import annotations

import signal
import time

import pytest

from tests.integration.inventory_data import (
    assert_backfilled,
    checkpoint,
    events,
    kill,
    load,
    make_dataset,
    run_worker,
    start_worker,
    wait_for,
)


def assert_exact(env, data):
    assert_backfilled(env, data)
    cp = checkpoint(env)
    assert cp["status"] == "completed"
    assert cp["counters"] == data.expected_counters()


def in_products_phase(env, batches: int):
    def reached():
        cp = checkpoint(env) or {}
        return cp.get("phase") == "products" and cp.get("batch_no", 0) >= batches
    return reached


def slow_run_env(worker_env):
    # Batches held at 100 rows: the sizer would otherwise finish 3,000 rows in a few batches.
    worker_env.update(BATCH_SIZE="100", BATCH_SIZE_MAX="100", SLEEP_BETWEEN_BATCHES="0.05", RETRY_TIMEOUT_SECONDS="120", RETRY_MAX_WAIT_SECONDS="2")
    return worker_env


def worker_in_products_phase(env, tmp_path, rows=3000):
    """Load data, start the worker and return once it has checkpointed a few product batches."""
    data = make_dataset(rows)
    load(env, data)
    log = tmp_path / "w.log"
    proc = start_worker(env, log_path=log)
    wait_for(in_products_phase(env, 3), 60, what="a few batches")
    return data, proc, log


# An outage of 8 s already spans several retries (RETRY_MAX_WAIT_SECONDS=2); the 30 s one, the
# size this test was written for, runs with -m slow.
@pytest.mark.parametrize("down_seconds", [8, pytest.param(30, marks=pytest.mark.slow)], ids=lambda s: f"{s}s")
def test_typesense_down_for_a_while_is_ridden_out_without_advancing(services, worker_env, tmp_path, down_seconds):
    env = slow_run_env(worker_env)
    data, proc, log = worker_in_products_phase(env, tmp_path)

    services.typesense.stop()
    time.sleep(3)
    frozen = checkpoint(env)["batch_no"]
    time.sleep(down_seconds - 3)
    assert checkpoint(env)["batch_no"] == frozen, "no batch may be checkpointed while its index writes cannot happen"
    assert proc.poll() is None, "the worker waits; it does not give up within its retry time"
    services.typesense.start()

    assert proc.wait(timeout=180) == 0
    retries = [e for e in events(log.read_text()) if e["event"] == "retrying"]
    assert retries and {e["service"] for e in retries} == {"typesense"}
    assert_exact(env, data)


def test_postgres_restart_mid_run(services, worker_env, tmp_path):
    env = slow_run_env(worker_env)
    data, proc, log = worker_in_products_phase(env, tmp_path)

    services.postgres.restart()

    assert proc.wait(timeout=180) == 0
    assert any(e["event"] == "retrying" and e["service"] == "postgres" for e in events(log.read_text()))
    assert_exact(env, data)


def test_mongodb_down_for_a_while_is_ridden_out(services, worker_env, tmp_path):
    env = slow_run_env(worker_env)
    data, proc, log = worker_in_products_phase(env, tmp_path)

    services.mongo.stop()
    time.sleep(8)
    services.mongo.start()

    assert proc.wait(timeout=180) == 0
    assert any(e["event"] == "retrying" and e["service"] == "mongodb" for e in events(log.read_text()))
    assert_exact(env, data)


def test_mongodb_down_too_long_exits_4_then_resumes_exactly(services, worker_env, tmp_path):
    env = slow_run_env(worker_env)
    env.update(RETRY_TIMEOUT_SECONDS="3", RETRY_MAX_WAIT_SECONDS="0.5")
    data, proc, log = worker_in_products_phase(env, tmp_path)

    services.mongo.stop()
    code = proc.wait(timeout=60)
    services.mongo.start()

    assert code == 4
    saved = checkpoint(env)
    logged = [e for e in events(log.read_text()) if e["event"] == "batch"]
    assert logged[-1]["batch_no"] <= saved["batch_no"], "no batch is reported done that is not checkpointed"
    assert saved["status"] == "running", "the last checkpoint is kept as it was"
    failed = [line for line in log.read_text().splitlines() if line.startswith("error: ")]
    assert len(failed) == 1 and "mongodb" in failed[0].lower(), failed

    assert run_worker(env).returncode == 0
    assert_exact(env, data)


def test_a_second_worker_takes_over_when_the_first_dies(worker_env, tmp_path):
    env = slow_run_env(worker_env)
    env["LEASE_TTL_SECONDS"] = "2"
    data = make_dataset(2000)
    load(env, data)
    first = start_worker(env, log_path=tmp_path / "first.log")
    wait_for(in_products_phase(env, 2), 60, what="first worker's batches")
    second_log = tmp_path / "second.log"
    second = start_worker(env, log_path=second_log)
    wait_for(lambda: "lease held by another worker" in second_log.read_text(), 30, what="second worker waiting")
    assert f":{first.pid}:" in checkpoint(env)["lease"]["owner"]  # host:pid:nonce

    kill(first, signal.SIGKILL)

    assert second.wait(timeout=120) == 0
    assert checkpoint(env)["lease"] is None
    assert_exact(env, data)
