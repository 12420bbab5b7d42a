"""Seed-style baseline: the inventory_fields job as a plain sequential loop, no sleep.

Run by the harness as ``python -m bench.baseline`` with the worker's environment variables.
Deliberately naive, the way the original seed script did it: no engine, no intents, no lease,
no retries, no failure isolation; one MongoDB ``update_one`` checkpoint per batch.

1. schema:     add ``created_at`` / ``deleted_at`` (int64, optional) to the collection if missing.
2. products:   repeat { keyset fetch of 1,000 rows (``SELECT id, created_at, deleted_at ...
               WHERE id > %s ORDER BY id LIMIT 1000``); ``UPDATE ... SET deleted_at = 0
               WHERE id = ANY(%s) AND deleted_at IS NULL``; one import (action=update) of
               ``{id, created_at, deleted_at}`` for the batch; checkpoint }.
3. index_only: stream the export of the collection (id, created_at, deleted_at), in pages of
               250 (the worker's TYPESENSE_PAGE_SIZE default): which ids have a product row
               (``SELECT id ... WHERE id = ANY(%s)``); import defaults (0) for the fields that
               the others lack; checkpoint per page.

Integer product keys only (the benchmark's data). Prints ``BENCH_RESULT {json}`` at the end.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone

import httpx
import typesense
from psycopg import sql
from pymongo import MongoClient

from bench.common import EXPORT_PARAMS, NEW_FIELDS, count_import_result, emit_result, inventory_settings, pg_connect, settings_from_env, typesense_base, typesense_headers

BATCH = 1000
PAGE = 250
CHECKPOINT_ID = "baseline_inventory_fields"


def main() -> int:
    s = settings_from_env()
    conn = pg_connect(s, autocommit=True)
    mongo = MongoClient(s.mongo_uri)
    checkpoints = mongo[s.mongo_db_name][s.mongo_checkpoint_collection]
    client = typesense.Client({
        "nodes": [{"host": s.typesense_host, "port": s.typesense_port, "protocol": s.typesense_protocol}],
        "api_key": s.typesense_api_key,
        "connection_timeout_seconds": s.typesense_timeout_seconds,
        "num_retries": 0,
    })
    collection = client.collections[s.typesense_collection]
    products = inventory_settings().products_table
    table = sql.Identifier(products.schema, products.name)
    counters = dict(rows_scanned=0, pg_rows_updated=0, index_docs_updated=0, missing_in_index=0,
                    index_docs_scanned=0, index_only_defaulted=0, index_only_already_set=0, failures=0,
                    index_fields_added=0)
    phases: dict[str, float] = {}
    batch_no = 0

    def checkpoint(phase: str, last_id: object) -> None:
        checkpoints.update_one(
            {"_id": CHECKPOINT_ID},
            {"$set": {"phase": phase, "last_id": last_id, "batch_no": batch_no, "counters": counters,
                      "updated_at": datetime.now(timezone.utc)}},
            upsert=True,
        )

    def count_results(results: list[dict], updated: str) -> None:
        for r in results:
            count_import_result(counters, r, updated)

    # 1. schema
    started = time.monotonic()
    have = {f["name"] for f in collection.retrieve()["fields"]}
    missing = [{"name": f, "type": "int64", "optional": True} for f in NEW_FIELDS if f not in have]
    if missing:
        collection.update({"fields": missing})
    counters["index_fields_added"] = len(missing)
    phases["schema"] = time.monotonic() - started

    # 2. products
    started = time.monotonic()
    first = sql.SQL("SELECT id, created_at, deleted_at FROM {} ORDER BY id LIMIT %s").format(table)
    after = sql.SQL("SELECT id, created_at, deleted_at FROM {} WHERE id > %s ORDER BY id LIMIT %s").format(table)
    update = sql.SQL("UPDATE {} SET deleted_at = 0 WHERE id = ANY(%s) AND deleted_at IS NULL").format(table)
    last_id = None
    while True:
        if last_id is None:
            rows = conn.execute(first, (BATCH,)).fetchall()
        else:
            rows = conn.execute(after, (last_id, BATCH)).fetchall()
        if not rows:
            break
        null_ids = [key for key, _, deleted_at in rows if deleted_at is None]
        if null_ids:
            counters["pg_rows_updated"] += conn.execute(update, (null_ids,)).rowcount
        docs = [
            {"id": str(key), "created_at": int(created_at.timestamp()) if created_at else 0,
             "deleted_at": deleted_at or 0}
            for key, created_at, deleted_at in rows
        ]
        count_results(collection.documents.import_(docs, {"action": "update"}), "index_docs_updated")
        counters["rows_scanned"] += len(rows)
        last_id = rows[-1][0]
        batch_no += 1
        checkpoint("products", last_id)
        if len(rows) < BATCH:
            break
    phases["products"] = time.monotonic() - started

    # 3. index_only
    started = time.monotonic()
    exists = sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(table)

    def default_page(page: list[dict]) -> None:
        nonlocal batch_no
        keys = [int(d["id"]) for d in page if d["id"].isdigit()]
        found = {str(k) for (k,) in conn.execute(exists, (keys,)).fetchall()}
        patches = []
        for d in page:
            if d["id"] in found:
                continue
            patch = {f: 0 for f in NEW_FIELDS if d.get(f) is None}
            if patch:
                patches.append({"id": d["id"], **patch})
            else:
                counters["index_only_already_set"] += 1
        if patches:
            count_results(collection.documents.import_(patches, {"action": "update"}), "index_only_defaulted")
        counters["index_docs_scanned"] += len(page)
        batch_no += 1
        checkpoint("index_only", page[-1]["id"])

    url = f"{typesense_base(s)}/collections/{s.typesense_collection}/documents/export"
    page: list[dict] = []
    with httpx.stream("GET", url, params=EXPORT_PARAMS, headers=typesense_headers(s),
                      timeout=s.typesense_timeout_seconds) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.strip():
                page.append(json.loads(line))
                if len(page) == PAGE:
                    default_page(page)
                    page = []
    if page:
        default_page(page)
    phases["index_only"] = time.monotonic() - started

    checkpoints.update_one({"_id": CHECKPOINT_ID}, {"$set": {"status": "completed"}})
    mongo.close()
    conn.close()
    emit_result({"phases": phases, "counters": counters, "batches": batch_no})
    return 0


if __name__ == "__main__":
    sys.exit(main())
