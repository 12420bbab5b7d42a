"""The provider alone, for the embeddings benchmark: the texts the job embeds (read first, not
timed), sent in requests of BATCH texts with CONCURRENCY in flight, the answers parsed and
dropped. Usage: python -m bench.embeddings_provider BATCH CONCURRENCY [LIMIT] (connection from
DB_*, tables from EMBEDDING_JOBS_TABLE, provider from EMBEDDING_URL). Prints
`BENCH_RESULT {json}`."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.common import emit_result, pg_connect, settings_from_env


def main() -> int:
    batch, concurrency = int(sys.argv[1]), int(sys.argv[2])
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else None
    schema = os.environ["EMBEDDING_JOBS_TABLE"].split(".")[0]
    url = os.environ["EMBEDDING_URL"].rstrip("/") + "/embeddings"
    with pg_connect(settings_from_env(), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        texts = [r[0] for r in conn.execute(
            "SELECT btrim(title || ' ' || coalesce(description, '')) FROM jobs WHERE is_active AND embedding IS NULL ORDER BY id LIMIT %s", (limit,)
        ).fetchall()]
    chunks = [texts[k:k + batch] for k in range(0, len(texts), batch)]
    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:

        def send(chunk: list[str]) -> int:
            response = client.post(url, json={"model": os.environ.get("EMBEDDING_MODEL", "all-MiniLM-L6-v2"), "input": chunk})
            response.raise_for_status()
            return len(response.json()["data"])

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            embedded = sum(pool.map(send, chunks))
        seconds = time.monotonic() - started
    emit_result({"embedded": embedded, "seconds": seconds, "batch": batch, "concurrency": concurrency})
    return 0


if __name__ == "__main__":
    sys.exit(main())
