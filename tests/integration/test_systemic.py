"""A batch in which every row fails is a bug or a broken table, not bad rows: the worker stops
with exit code 7 and one `error:` line, not a traceback, and writes nothing past that batch."""

from __future__ import annotations

from psycopg import sql

from tests.integration.inventory_data import (
    checkpoint,
    index_documents,
    load,
    make_dataset,
    pg_connect,
    pg_rows,
    run_worker,
    table_parts,
)


def test_a_batch_in_which_every_row_fails_exits_7_with_one_line(worker_env):
    data = make_dataset(120)
    load(worker_env, data)
    worker_env["BATCH_SIZE"] = "40"
    with pg_connect(worker_env) as conn:
        table = sql.Identifier(*table_parts(worker_env))
        # Every row needs its NULL set to 0, and the table refuses every such update.
        conn.execute(sql.SQL("UPDATE {} SET deleted_at = NULL").format(table))
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT refuse_every_update CHECK (deleted_at IS NULL)").format(table))
    rows, docs = pg_rows(worker_env), index_documents(worker_env)

    failed = run_worker(worker_env)

    assert failed.returncode == 7, failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith("error: SystemicBatchError: phase products: all 40 rows of the batch failed"), lines[0]
    assert "CheckViolation" in lines[0]
    assert "Traceback" not in failed.stderr + failed.stdout
    assert (failed.stdout + failed.stderr).count(lines[0].removeprefix("error: ")) == 1, "the error is printed once"
    cp = checkpoint(worker_env)
    assert cp["status"] == "failed" and cp["batch_no"] == 0 and "SystemicBatchError" in cp["error"]
    assert pg_rows(worker_env) == rows
    assert index_documents(worker_env) == docs
