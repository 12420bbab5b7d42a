"""Seed 003's embedding loop, for the benchmark: 50 queued jobs per request, one request at a
time, then one UPDATE per job and one per queue row, each its own statement (the seed's
`Promise.allSettled` of single-row updates, here in order). Usage: python -m bench.embeddings_seed
(connection from DB_*, tables from EMBEDDING_JOBS_TABLE, provider from EMBEDDING_URL).
Prints `BENCH_RESULT {json}`."""

from __future__ import annotations

import os
import sys
import time

import httpx

from bench.common import emit_result, pg_connect, settings_from_env

BATCH = 50


def main() -> int:
    schema = os.environ["EMBEDDING_JOBS_TABLE"].split(".")[0]
    url = os.environ["EMBEDDING_URL"].rstrip("/") + "/embeddings"
    embedded = requests = 0
    started = time.monotonic()
    with pg_connect(settings_from_env(), autocommit=True) as conn, httpx.Client(timeout=120) as client:
        conn.execute(f"SET search_path TO {schema}")
        while True:
            rows = conn.execute(
                "SELECT id, btrim(title || ' ' || coalesce(description, '')) FROM jobs WHERE is_active AND embedding IS NULL ORDER BY id LIMIT %s",
                (BATCH,),
            ).fetchall()
            if not rows:
                break
            response = client.post(url, json={"model": os.environ.get("EMBEDDING_MODEL", "all-MiniLM-L6-v2"), "input": [t for _, t in rows]})
            response.raise_for_status()
            requests += 1
            for (job_id, _), item in zip(rows, response.json()["data"]):
                conn.execute("UPDATE jobs SET embedding = %s WHERE id = %s", (item["embedding"], job_id))
                conn.execute("UPDATE embedding_queue SET status = 'completed', updated_at = now() WHERE job_id = %s", (job_id,))
                embedded += 1
    seconds = time.monotonic() - started
    emit_result({"embedded": embedded, "requests": requests, "seconds": seconds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
