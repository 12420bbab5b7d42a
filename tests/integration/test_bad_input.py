"""Bad rows and bad configuration: isolated or refused with one clear line, nothing lost, no write."""

from __future__ import annotations

import pytest

from tests.integration.inventory_data import (
    assert_backfilled,
    checkpoint,
    index_documents,
    index_for,
    load,
    make_dataset,
    pg_rows,
    products_sql,
    run_worker,
)
from tests.servers import free_port


def failure_lines(env) -> list[str]:
    listed = run_worker(env, "failures")
    assert listed.returncode == 0, listed.stderr
    return [line for line in listed.stdout.splitlines() if line.startswith("inventory_fields\t")]


def test_a_row_postgres_refuses_is_isolated_recorded_and_retried_after_the_fix(worker_env):
    data = make_dataset(400)
    load(worker_env, data)
    worker_env["BATCH_SIZE"] = "64"
    products_sql(worker_env, "ALTER TABLE {t} ADD CONSTRAINT no_zero_for_58 CHECK (id <> 58 OR deleted_at IS NULL)")
    assert dict(zip(range(1, 401), (d for _, _, d in data.products)))[58] is None

    first = run_worker(worker_env)

    assert first.returncode == 0, first.stderr
    rows, docs = pg_rows(worker_env), index_documents(worker_env)
    assert rows["58"] is None and "created_at" not in docs["58"], "the bad row is left as it was"
    expected_rows = data.expected_rows()
    assert {k: v for k, v in rows.items() if k != "58"} == {k: v for k, v in expected_rows.items() if k != "58"}
    counters = checkpoint(worker_env)["counters"]
    assert counters["failures"] == 1
    assert counters["pg_rows_updated"] == data.expected_counters()["pg_rows_updated"] - 1
    [line] = failure_lines(worker_env)
    assert "key='58'" in line and "CheckViolation" in line and "products" in line

    products_sql(worker_env, "ALTER TABLE {t} DROP CONSTRAINT no_zero_for_58")
    retried = run_worker(worker_env, "retry", "--job", "inventory_fields")

    assert retried.returncode == 0, retried.stderr
    assert pg_rows(worker_env) == expected_rows
    assert index_documents(worker_env) == data.expected_documents()
    assert checkpoint(worker_env)["counters"] == data.expected_counters()
    assert failure_lines(worker_env) == []


def test_a_timestamp_python_cannot_hold_fails_only_its_row(worker_env):
    data = make_dataset(100)
    load(worker_env, data)
    products_sql(worker_env, "UPDATE {t} SET created_at = 'infinity' WHERE id = 33")

    done = run_worker(worker_env)

    assert done.returncode == 0, done.stderr
    [line] = failure_lines(worker_env)
    assert "key='33'" in line and "OverflowError" in line
    docs = index_documents(worker_env)
    assert docs["32"]["created_at"] == data.expected_documents()["32"]["created_at"]

    products_sql(worker_env, "UPDATE {t} SET created_at = %s WHERE id = 33", data.products[32][1])
    assert run_worker(worker_env, "retry", "--job", "inventory_fields").returncode == 0
    assert index_documents(worker_env) == data.expected_documents()
    assert checkpoint(worker_env)["counters"] == data.expected_counters()


def test_table_names_are_quoted_identifiers(worker_env):
    suffix = worker_env["MONGO_DB_NAME"]
    worker_env.update(PRODUCTS_TABLE=f"public.Mixed_Case_{suffix}", SCRATCH_TABLE=f"public.Scratch_{suffix}")
    data = make_dataset(90)
    load(worker_env, data)

    done = run_worker(worker_env)

    assert done.returncode == 0, done.stderr
    assert_backfilled(worker_env, data)


def closed_port() -> str:
    return str(free_port())


BAD_CONFIGURATIONS = [
    # (variables, exit code, words the one line must hold)
    ({"BATCH_SIZE": "abc"}, 2, "BATCH_SIZE must be an integer"),
    ({"BATCH_SIZE": "-1"}, 2, "BATCH_SIZE must be between 1"),
    ({"SLEEP_BETWEEN_BATCHES": "soon"}, 2, "SLEEP_BETWEEN_BATCHES must be a number"),
    ({"TYPESENSE_PORT": "eighty"}, 2, "TYPESENSE_PORT must be an integer"),
    ({"JOB": "nope"}, 2, "JOB names no known job"),
    ({"PRODUCTS_TABLE": "public.products; DROP TABLE users"}, 2, "PRODUCTS_TABLE must be 'schema.table'"),
    ({"MONGO_URI": "localhost:27017"}, 2, "MONGO_URI must be a URI"),
    ({"DB_PORT": closed_port}, 4, "postgres unavailable"),
    ({"TYPESENSE_PORT": closed_port}, 4, "typesense unavailable"),
    ({"MONGO_URI": lambda: f"mongodb://127.0.0.1:{free_port()}"}, 4, "mongodb unavailable"),
    ({"DB_PASSWORD": "wrong-password-xyz"}, 6, "Postgres refused DB_USER/DB_PASSWORD"),
    ({"DB_DATABASE": "no_such_database"}, 5, "no_such_database"),
    ({"TYPESENSE_API_KEY": "wrong-key-xyz"}, 6, "Typesense refused TYPESENSE_API_KEY"),
    ({"TYPESENSE_COLLECTION": "no_such_collection"}, 5, "collection 'no_such_collection' does not exist"),
    ({"PRODUCTS_TABLE": "public.no_such_table"}, 5, "table public.no_such_table does not exist"),
]


@pytest.mark.parametrize(
    "overrides, code, words", BAD_CONFIGURATIONS, ids=[f"{next(iter(o))}-{c}" for o, c, _ in BAD_CONFIGURATIONS]
)
def test_each_bad_setting_gives_one_clear_line_a_distinct_code_and_no_write(worker_env, overrides, code, words):
    data = make_dataset(40)
    load(worker_env, data)
    rows, docs = pg_rows(worker_env), index_documents(worker_env)
    schema = index_for(worker_env).schema()["fields"]
    secrets = [worker_env["DB_PASSWORD"], worker_env["TYPESENSE_API_KEY"]]
    env = dict(worker_env, RETRY_TIMEOUT_SECONDS="2")
    env.update({k: (v() if callable(v) else v) for k, v in overrides.items()})
    secrets += [v for k, v in env.items() if k in ("DB_PASSWORD", "TYPESENSE_API_KEY")]

    bad = run_worker(env, timeout=60)

    assert bad.returncode == code, bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1, bad.stderr
    assert words in lines[0]
    for secret in secrets:
        assert secret not in bad.stdout + bad.stderr
    assert pg_rows(worker_env) == rows
    assert index_documents(worker_env) == docs
    assert index_for(worker_env).schema()["fields"] == schema
    assert checkpoint(worker_env) is None or checkpoint(worker_env)["batch_no"] == 0
    message = lines[0].removeprefix("error: ").removeprefix("configuration error: ")
    assert (bad.stdout + bad.stderr).count(message) == 1, "the error is printed once"
