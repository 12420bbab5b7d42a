"""The limit: the same job as a handful of whole-table operations, each timed on its own.

Run by the harness as ``python -m bench.limit`` with the worker's environment variables.
No batches, no checkpoint, no retries: what the servers themselves need to do the work.

Components, in this order (each timed separately, in seconds):

* ``schema``     add ``created_at`` / ``deleted_at`` (int64, optional) to the collection.
* ``pg_read``    information only: ``COPY (SELECT <the partial update as JSON> FROM products)
                 TO STDOUT`` drained and thrown away, i.e. what reading the rows alone costs.
* ``import``     the same COPY streamed, without buffering the table, as the chunked body of
                 ONE ``POST /collections/<c>/documents/import?action=update`` of every
                 product's ``{id, created_at, deleted_at}``; every result line is read and
                 counted. Postgres renders the JSON, so the client does almost nothing.
* ``pg_update``  ONE ``UPDATE products SET deleted_at = 0 WHERE deleted_at IS NULL``.
* ``index_only`` the export's ``id, created_at, deleted_at`` streamed into a temporary table by
                 COPY, ONE anti-join against products, ONE import of the defaults (0) for the
                 fields those index-only documents lack.

The import reads ``coalesce(deleted_at, 0)``, so it does not depend on the UPDATE: the two can
run side by side, which is why the harness reports their sum (one-shot limit) and their maximum
(pipelined bound). Integer product keys only (the benchmark's data).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Iterator

import httpx
from psycopg import sql

from bench.common import EXPORT_PARAMS, NEW_FIELDS, count_import_result, emit_result, inventory_settings, pg_connect, settings_from_env, typesense_base, typesense_headers

CHUNK_BYTES = 256 * 1024  # body chunks sent to Typesense


def main() -> int:
    s = settings_from_env()
    products = inventory_settings().products_table
    table = sql.Identifier(products.schema, products.name)
    coll = s.typesense_collection
    base = typesense_base(s)
    http = httpx.Client(headers=typesense_headers(s), timeout=httpx.Timeout(3600.0, connect=10.0))
    conn = pg_connect(s, autocommit=True)
    phases: dict[str, float] = {}
    counters: dict[str, int] = {}

    # schema
    started = time.monotonic()
    r = http.get(f"{base}/collections/{coll}")
    r.raise_for_status()
    have = {f["name"] for f in r.json()["fields"]}
    missing = [{"name": f, "type": "int64", "optional": True} for f in NEW_FIELDS if f not in have]
    if missing:
        http.patch(f"{base}/collections/{coll}", json={"fields": missing}).raise_for_status()
    counters["index_fields_added"] = len(missing)
    phases["schema"] = time.monotonic() - started

    as_json = sql.SQL(
        "COPY (SELECT concat('{{\"id\":', to_json(id::text),"
        " ',\"created_at\":', coalesce(trunc(extract(epoch FROM created_at))::bigint, 0),"
        " ',\"deleted_at\":', coalesce(deleted_at, 0), '}}') FROM {}) TO STDOUT"
    ).format(table)

    def body() -> Iterator[bytes]:
        """COPY output, one JSON object per line (ids are integers: nothing COPY would escape)."""
        buf = bytearray()
        with conn.cursor() as cur, cur.copy(as_json) as copy:
            for data in copy:
                buf += data
                if len(buf) >= CHUNK_BYTES:
                    yield bytes(buf)
                    buf.clear()
        if buf:
            yield bytes(buf)

    # pg_read (information only)
    started = time.monotonic()
    read_bytes = sum(len(chunk) for chunk in body())
    phases["pg_read"] = time.monotonic() - started
    counters["pg_read_bytes"] = read_bytes

    # import: one streamed bulk import of every product's partial update
    started = time.monotonic()
    _add(counters, _import(http, f"{base}/collections/{coll}/documents/import", body(), "index_docs_updated"))
    phases["import"] = time.monotonic() - started

    # pg_update: one statement over the whole table
    started = time.monotonic()
    with conn.transaction():
        counters["pg_rows_updated"] = conn.execute(
            sql.SQL("UPDATE {} SET deleted_at = 0 WHERE deleted_at IS NULL").format(table)
        ).rowcount
    phases["pg_update"] = time.monotonic() - started

    # index_only: export -> temp table -> one anti-join -> one import
    started = time.monotonic()
    with conn.transaction():
        conn.execute("CREATE TEMPORARY TABLE bench_limit_ids (doc_id text, key bigint, created_at bigint,"
                     " deleted_at bigint) ON COMMIT DROP")
        with conn.cursor() as cur, cur.copy(
            "COPY bench_limit_ids (doc_id, key, created_at, deleted_at) FROM STDIN"
        ) as copy, http.stream("GET", f"{base}/collections/{coll}/documents/export",
                               params=EXPORT_PARAMS) as response:
            response.raise_for_status()
            scanned = 0
            for line in response.iter_lines():
                if line.strip():
                    d = json.loads(line)
                    doc_id = d["id"]
                    key = int(doc_id) if doc_id.isdigit() and len(doc_id) < 19 else None
                    copy.write_row((doc_id, key, d.get("created_at"), d.get("deleted_at")))
                    scanned += 1
        orphans = conn.execute(sql.SQL(
            "SELECT t.doc_id, t.created_at IS NULL, t.deleted_at IS NULL FROM bench_limit_ids t"
            " WHERE NOT EXISTS (SELECT 1 FROM {} p WHERE p.id = t.key)"
        ).format(table)).fetchall()
    counters["index_docs_scanned"] = scanned
    patches = []
    already = 0
    for doc_id, no_created, no_deleted in orphans:
        patch = {f: 0 for f, absent in zip(NEW_FIELDS, (no_created, no_deleted)) if absent}
        if patch:
            patches.append(json.dumps({"id": doc_id, **patch}, separators=(",", ":")))
        else:
            already += 1
    counters["index_only_already_set"] = already
    if patches:
        _add(counters, _import(http, f"{base}/collections/{coll}/documents/import",
                               iter(["\n".join(patches).encode()]), "index_only_defaulted"))
    phases["index_only"] = time.monotonic() - started

    conn.close()
    http.close()
    emit_result({"phases": phases, "counters": counters})
    return 0


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value


def _import(http: httpx.Client, url: str, body: Iterator[bytes], updated: str) -> dict[str, int]:
    """One streamed import (chunked body); count every result line."""
    counts = {updated: 0, "missing_in_index": 0, "failures": 0}
    with http.stream("POST", url, params={"action": "update"}, content=body,
                     headers={"Content-Type": "text/plain"}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.strip():
                continue
            if line == '{"success":true}':
                counts[updated] += 1
                continue
            count_import_result(counts, json.loads(line), updated)
    return counts


if __name__ == "__main__":
    sys.exit(main())
