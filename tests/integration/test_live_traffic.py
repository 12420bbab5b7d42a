"""The job on a live system: a simulated application deletes, restores and inserts products (some
behind the cursor) while the worker runs, is killed several times and has a dry run beside it.
At the end both stores must agree everywhere, and `verify` must say so; with the reconcile phase
turned off, the same run must leave differences that this test and `verify` both see."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from datetime import datetime

import pytest
from psycopg import sql

from tests.integration.inventory_data import (
    checkpoint,
    events,
    index_documents,
    load,
    make_dataset,
    pg_connect,
    run_worker,
    start_worker,
    table_parts,
    wait_for,
)
from tests.integration.live_app import LiveApp

ROWS = 100_000
KILLS = (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL)


def end_state_problems(env: dict[str, str], documents_at_start: set[str], app: LiveApp) -> list[str]:
    """Everything that disagrees between the stores (empty when they agree)."""
    with pg_connect(env) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id::text, created_at, deleted_at FROM {}").format(sql.Identifier(*table_parts(env)))
        ).fetchall()
    products = {key: (_unix(created), deleted) for key, created, deleted in rows}
    docs = index_documents(env)
    problems = []
    nulls = sorted(k for k, (_, deleted) in products.items() if deleted is None)
    if nulls:
        problems.append(f"{len(nulls)} products with NULL deleted_at, e.g. {nulls[:5]}")
    wrong = sorted(
        doc_id for doc_id, doc in docs.items()
        if (doc.get("created_at"), doc.get("deleted_at")) != products.get(doc_id, (0, 0))
    )
    if wrong:
        shown = [(d, docs[d].get("created_at"), docs[d].get("deleted_at"), products.get(d)) for d in wrong[:5]]
        problems.append(f"{len(wrong)} documents disagree with Postgres (or are not (0, 0) if index-only), e.g. {shown}")
    expected_ids = documents_at_start | {str(k) for k in app.inserted}
    if set(docs) != expected_ids:
        problems.append(f"documents created or lost: {sorted(set(docs) ^ expected_ids)[:5]}")
    return problems


def _unix(created: datetime | None) -> int:
    return int(created.timestamp()) if created else 0


def reconcile_passes(log_text: str) -> list[dict]:
    """Each reconcile walk's own counters, from the worker's 'phase done' lines."""
    return [e["counters"] for e in events(log_text) if e["event"] == "phase done" and e.get("phase") == "reconcile"]


@pytest.mark.parametrize("reconcile", [True, False], ids=["reconcile", "reconcile_off"])
def test_a_live_application_and_kills_leave_both_stores_in_agreement(worker_env, tmp_path, reconcile):
    rng = random.Random()
    seed = rng.randrange(1_000_000)
    data = make_dataset(ROWS, spacing=2)
    load(worker_env, data)
    documents_at_start = {d["id"] for d in data.documents}
    worker_env.update(BATCH_SIZE="2000", BATCH_SIZE_MAX="4000", SLEEP_BETWEEN_BATCHES="0.1", LEASE_TTL_SECONDS="2")
    if not reconcile:
        worker_env["RECONCILE_MAX_PASSES"] = "0"
    log = tmp_path / "worker.log"
    app = LiveApp(worker_env, [k for k, _, _ in data.products], rate=150, seed=seed)
    app.start()
    dry = {}

    def dry_run() -> None:
        dry["run"] = run_worker(worker_env, "run", "--dry-run", timeout=300)

    beside = threading.Thread(target=dry_run)
    kills = []
    try:
        for n, sig in enumerate(KILLS):
            started = _starts(log)
            proc = start_worker(worker_env, log_path=log)
            wait_for(lambda: _starts(log) > started, 60, what="the worker to take the lease")
            if n == 1:
                beside.start()  # a dry run of the whole job beside the real worker
            time.sleep(rng.uniform(1.0, 3.0))
            code = proc.poll() if proc.poll() is not None else _kill(proc, sig)
            cp = checkpoint(worker_env)
            kills.append((sig.name, code, cp["phase"], cp["last_id"]))
        proc = start_worker(worker_env, log_path=log)
        assert proc.wait(timeout=300) == 0
    finally:
        app.stop()
    beside.join(timeout=300)

    log_text = log.read_text()
    cp = checkpoint(worker_env)
    problems = end_state_problems(worker_env, documents_at_start, app)
    verified = run_worker(worker_env, "verify", "--json")
    report = json.loads(verified.stdout)
    passes = reconcile_passes(log_text)
    print(
        f"\nlive traffic (seed {seed}, reconcile {'on' if reconcile else 'off'}): app ops {dict(app.ops)},"
        f" {app.writes} writes in {app.seconds:.1f}s ({app.writes / max(app.seconds, 0.001):.0f}/s), {len(app.inserted)} inserts ({app.behind_cursor} behind the cursor);"
        f" kills {kills}; reconcile passes {passes}; status {cp['status']}; counters {cp['counters']};"
        f" verify {report['differences']} {json.dumps(report['by_kind'])}; problems {problems}"
    )
    assert dry["run"].returncode == 0, dry["run"].stderr
    assert any(e["event"] == "dry run: nothing was written" for e in events(dry["run"].stdout))
    assert app.writes >= 1000 and app.behind_cursor > 0, "the application must have written while the job ran"
    if reconcile:
        assert problems == []
        assert (verified.returncode, report["differences"]) == (0, 0), verified.stdout
        assert cp["status"] == "completed"
        assert len(passes) >= 2 and sum(passes[0].get(k, 0) for k in ("reconciled_pg_rows", "reconciled_documents")) > 0
    else:
        assert problems, "without reconcile the application's writes behind the cursor stay wrong"
        assert verified.returncode == 1 and report["by_kind"]["pg_deleted_at_null"]["count"] > 0, verified.stdout


def _starts(log) -> int:
    """How many runs have taken the job's lease so far."""
    text = log.read_text() if log.exists() else ""
    return sum(1 for e in events(text) if e["event"] in ("job started", "job resumed"))


def _kill(proc, sig: signal.Signals) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=30)
