"""Known product rows and index documents, the state a correct backfill must leave, and readers
for the actual state of both stores, so tests compare whole tables and collections."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pymongo
from psycopg import sql

from utils.typesense import EncodedDocuments, TypesenseIndex
from worker.demo_seed import create_products

REPO = Path(__file__).resolve().parents[2]
#: Workers run from here, so a developer's own `.env` in the repo cannot leak into a test.
NO_DOTENV = Path(tempfile.mkdtemp(prefix="backfill-worker-cwd-"))
BASE_TIME = datetime(2024, 3, 1, tzinfo=timezone.utc)
DELETED_AT = 1_700_000_000


@dataclass
class Dataset:
    """Products as (key, created_at, deleted_at), documents initially in the index."""

    key_type: str
    products: list[tuple[Any, datetime | None, int | None]]
    documents: list[dict[str, Any]]
    index_has_fields: bool = False
    index_only_ids: list[str] = field(default_factory=list)

    def expected_rows(self) -> dict[str, int]:
        return {str(k): (0 if d is None else d) for k, _, d in self.products}

    def expected_documents(self) -> dict[str, dict[str, Any]]:
        rows = {str(k): (c, d) for k, c, d in self.products}
        expected = {}
        for doc in self.documents:
            if doc["id"] in rows:
                created, deleted = rows[doc["id"]]
                patch = {"created_at": int(created.timestamp()) if created else 0, "deleted_at": deleted or 0}
            else:
                patch = {"created_at": doc.get("created_at", 0), "deleted_at": doc.get("deleted_at", 0)}
            expected[doc["id"]] = {**doc, **patch}
        return expected

    def expected_counters(self) -> dict[str, int]:
        indexed = {d["id"] for d in self.documents}
        keys = {str(k) for k, _, _ in self.products}
        orphans = [d for d in self.documents if d["id"] not in keys]
        return {
            "rows_scanned": len(self.products),
            "pg_rows_updated": sum(1 for _, _, d in self.products if d is None),
            "index_docs_updated": sum(1 for k in keys if k in indexed),
            "missing_in_index": sum(1 for k in keys if k not in indexed),
            "index_docs_scanned": len(self.documents),
            "index_only_defaulted": sum(1 for d in orphans if "created_at" not in d or "deleted_at" not in d),
            "index_only_already_set": sum(1 for d in orphans if "created_at" in d and "deleted_at" in d),
            "failures": 0,
            "index_fields_added": 0 if self.index_has_fields else 2,
            # Nothing wrote beside the job, so the reconcile phase finds nothing in one pass.
            "reconciled_pg_rows": 0,
            "reconciled_documents": 0,
            "reconcile_passes": 1,
        }


def make_dataset(n: int, key_type: str = "int", index_has_fields: bool = False, spacing: int = 1) -> Dataset:
    """Every case the job handles: NULL and 0 and deleted `deleted_at`, NULL `created_at`,
    products missing from the index, index-only documents with and without the fields.
    `spacing` > 1 leaves free keys between the products (for rows inserted while the job runs)."""
    keys = [_key(key_type, i * spacing) for i in range(1, n + 1)]
    products = []
    for i, key in enumerate(keys, start=1):
        created = None if i % 17 == 0 else BASE_TIME + timedelta(seconds=i)
        deleted = DELETED_AT + i if i % 11 == 0 else (None if i % 2 == 0 else 0)
        products.append((key, created, deleted))
    documents = [{"id": str(k), "name": f"product {i}"} for i, k in enumerate(keys, start=1) if i % 13 != 0]
    orphans = [str(_key(key_type, n * spacing + 1000 + j)) for j in range(6)]
    if key_type == "int":
        orphans += ["orphan-a", "orphan-b"]  # ids no integer key could have
        orphans.append(f"0{_key(key_type, 5)}")  # "05" is not product 5's document (its id is "5")
    if key_type == "uuid":
        orphans.append(str(_key(key_type, 5)).upper())  # product 5's document has the lower-case id
    for j, doc_id in enumerate(orphans):
        doc: dict[str, Any] = {"id": doc_id, "name": f"orphan {j}"}
        if index_has_fields and j < 2:
            doc.update(created_at=123 + j, deleted_at=DELETED_AT)  # already set: must stay as is
        documents.append(doc)
    return Dataset(key_type, products, documents, index_has_fields, orphans)


def _key(key_type: str, i: int) -> Any:
    if key_type == "uuid":
        return uuid.UUID(int=i * 7919)
    if key_type == "text":
        return f"sku-{i:06d}"
    return i


def table_parts(env: dict[str, str]) -> tuple[str, str]:
    schema, name = env["PRODUCTS_TABLE"].split(".")
    return schema, name


def pg_connect(env: dict[str, str]) -> psycopg.Connection:
    return psycopg.connect(
        host=env["DB_HOST"], port=env["DB_PORT"], dbname=env["DB_DATABASE"],
        user=env["DB_USER"], password=env["DB_PASSWORD"], autocommit=True,
    )


@contextlib.contextmanager
def own_schema(worker_env: dict[str, str], prefix: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A schema of the test's own, `<prefix>_<its MongoDB database>` (the caller creates it; it
    is dropped afterwards), and the worker's environment without Typesense: a job on Postgres
    alone needs none."""
    schema = f"{prefix}_{worker_env['MONGO_DB_NAME']}"
    yield schema, {k: v for k, v in worker_env.items() if not k.startswith("TYPESENSE_")}
    with pg_connect(worker_env) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def schema_connect(env: dict[str, str], schema: str) -> psycopg.Connection:
    """A connection whose search_path is `schema` (a job test's own copy of a seed's tables)."""
    conn = pg_connect(env)
    conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
    return conn


def schema_execute(env: dict[str, str], schema: str, statement: str, *params: Any) -> list[tuple]:
    """One statement in `schema`; its rows, if it returns any."""
    with schema_connect(env, schema) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


def index_for(env: dict[str, str]) -> TypesenseIndex:
    return TypesenseIndex(
        env["TYPESENSE_HOST"], int(env["TYPESENSE_PORT"]), env.get("TYPESENSE_PROTOCOL", "http"),
        env["TYPESENSE_API_KEY"], env["TYPESENSE_COLLECTION"],
    )


def load(env: dict[str, str], data: Dataset) -> None:
    table = sql.Identifier(*table_parts(env))
    with pg_connect(env) as conn:
        create_products(conn, table, data.key_type)
        with conn.cursor().copy(sql.SQL("COPY {} (id, name, created_at, deleted_at) FROM STDIN").format(table)) as copy:
            for key, created, deleted in data.products:
                copy.write_row((key, f"product {key}", created, deleted))
    fields = [{"name": "name", "type": "string"}]
    if data.index_has_fields:
        fields += [{"name": n, "type": "int64", "optional": True} for n in ("created_at", "deleted_at")]
    index = index_for(env)
    index._client.collections.create({"name": env["TYPESENSE_COLLECTION"], "fields": fields})
    for start in range(0, len(data.documents), 5000):
        report = index.import_documents(EncodedDocuments.from_dicts(data.documents[start : start + 5000]), "create")
        assert not report.failed, report.failed[:3]


def products_sql(env: dict[str, str], statement: str, *params) -> None:
    """Run `statement` with `{t}` standing for the products table (as the application would)."""
    with pg_connect(env) as conn:
        conn.execute(sql.SQL(statement).format(t=sql.Identifier(*table_parts(env))), params)


def pg_rows(env: dict[str, str]) -> dict[str, int | None]:
    with pg_connect(env) as conn:
        rows = conn.execute(sql.SQL("SELECT id, deleted_at FROM {}").format(sql.Identifier(*table_parts(env)))).fetchall()
    return {str(k): d for k, d in rows}


def index_documents(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in index_for(env).export_documents()}


def assert_backfilled(env: dict[str, str], data: Dataset) -> None:
    """Both stores hold exactly what a correct backfill of `data` leaves."""
    assert pg_rows(env) == data.expected_rows()
    assert index_documents(env) == data.expected_documents()


def checkpoint(env: dict[str, str]) -> dict[str, Any] | None:
    with pymongo.MongoClient(env["MONGO_URI"], serverSelectionTimeoutMS=5000) as client:
        return client[env["MONGO_DB_NAME"]]["inventory_backfill_checkpoint"].find_one({"_id": "backfill_inventory_fields"})


# -- running the worker as a real process ---------------------------------------------------


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker", *args]


def child_env(env: dict[str, str]) -> dict[str, str]:
    """Only what the test says, plus PATH: the developer's own variables must not leak in."""
    return {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), **env}


def run_worker(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        worker_command(*args), cwd=NO_DOTENV, env=child_env(env), capture_output=True, text=True, timeout=timeout
    )


def start_worker(env: dict[str, str], *args: str, log_path: Path) -> subprocess.Popen:
    out = open(log_path, "a")
    return subprocess.Popen(
        worker_command(*args), cwd=NO_DOTENV, env=child_env(env), stdout=out, stderr=subprocess.STDOUT
    )


def events(output: str) -> list[dict[str, Any]]:
    """The JSON log lines of a run (anything else, like a traceback, is skipped)."""
    found = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return found


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def kill(proc: subprocess.Popen, sig: signal.Signals) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=30)
