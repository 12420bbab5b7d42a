"""Seed 002's import as its scripts run it, for the benchmark, over local Postgres:
`import_codes_folder.sh` staging row by row (one INSERT per CSV row into `codes_check_temp`,
one transaction per file), `mark_duplicates_in_temp` (a window function for duplicates within
the files, then existing codes in 100,000-row chunks), and `insert_clean_codes_to_production`
(re-validation, the job row, and the single `INSERT ... SELECT` in one transaction). Usage:
python -m bench.codes_import_seed DIR (connection from DB_*, tables' schema from CODES_TABLE).
Prints `BENCH_RESULT {json}` with each step's seconds."""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

from bench.common import emit_result, pg_connect, settings_from_env

COLUMNS = ("merchant_id", "code", "serial", "sku", "points", "sku_name", "batch_code", "price")
CHUNK = 100_000


def stage(conn, folder: Path) -> int:
    conn.execute(
        "CREATE TABLE codes_check_temp (id bigserial PRIMARY KEY, merchant_id uuid, code text, serial text, sku text, points numeric,"
        " sku_name text, batch_code text, price numeric, row_number bigint, internal_dup boolean DEFAULT false,"
        " existing_dup boolean DEFAULT false, created_at timestamptz DEFAULT now())"
    )
    conn.execute("CREATE INDEX ON codes_check_temp (code, merchant_id)")
    conn.execute("CREATE INDEX ON codes_check_temp (merchant_id, internal_dup, existing_dup)")
    n = 0
    insert = f"INSERT INTO codes_check_temp ({', '.join(COLUMNS)}, row_number) VALUES ({', '.join(['%s'] * (len(COLUMNS) + 1))})"
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="") as f, conn.transaction(), conn.cursor() as cur:
            reader = csv.DictReader(f)
            for record in reader:
                if not any(v.strip() for v in record.values() if v):
                    continue
                record.setdefault("batch_code", record.get("batch_id"))
                n += 1
                cur.execute(insert, (*(record.get(c) or None for c in COLUMNS), n))
    return n


def mark(conn, rows: int) -> None:
    conn.execute(
        "UPDATE codes_check_temp t SET internal_dup = true FROM (SELECT id, row_number() OVER (PARTITION BY merchant_id, code ORDER BY row_number) AS rn"
        " FROM codes_check_temp) d WHERE d.id = t.id AND d.rn > 1"
    )
    for start in range(1, rows + 1, CHUNK):
        conn.execute(
            "UPDATE codes_check_temp t SET existing_dup = true WHERE row_number BETWEEN %s AND %s"
            " AND EXISTS (SELECT 1 FROM codes c WHERE c.code = t.code AND c.merchant_id = t.merchant_id)",
            (start, start + CHUNK - 1),
        )


def insert(conn) -> int:
    with conn.transaction():
        conn.execute(
            "UPDATE codes_check_temp t SET existing_dup = true WHERE NOT internal_dup AND NOT existing_dup"
            " AND EXISTS (SELECT 1 FROM codes c WHERE c.code = t.code AND c.merchant_id = t.merchant_id)"
        )
        expected = conn.execute("SELECT count(*) FROM codes_check_temp WHERE NOT internal_dup AND NOT existing_dup").fetchone()[0]
        job = conn.execute(
            "INSERT INTO codes_import_jobs (status, total_codes_to_insert) VALUES ('processing', %s) RETURNING id", (expected,)
        ).fetchone()[0]
        inserted = conn.execute(
            f"INSERT INTO codes ({', '.join(COLUMNS)}, import_job_id, source) SELECT {', '.join('ct.' + c for c in COLUMNS)}, %s, 'csv_import'"
            " FROM codes_check_temp ct WHERE NOT ct.internal_dup AND NOT ct.existing_dup"
            " AND NOT EXISTS (SELECT 1 FROM codes c WHERE c.code = ct.code AND c.merchant_id = ct.merchant_id)",
            (job,),
        ).rowcount
        if inserted != expected:
            raise RuntimeError(f"Count mismatch: expected {expected}, got {inserted}")
        conn.execute("UPDATE codes_import_jobs SET status = 'completed', codes_inserted = %s, completed_at = now() WHERE id = %s", (inserted, job))
    return inserted


def main() -> int:
    folder = Path(sys.argv[1])
    schema = os.environ["CODES_TABLE"].split(".")[0]
    timings = {}
    with pg_connect(settings_from_env(), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        started = time.monotonic()
        rows = stage(conn, folder)
        timings["stage"] = time.monotonic() - started
        started = time.monotonic()
        mark(conn, rows)
        timings["mark"] = time.monotonic() - started
        started = time.monotonic()
        inserted = insert(conn)
        timings["insert"] = time.monotonic() - started
        conn.execute("DROP TABLE codes_check_temp")
    emit_result({"rows": rows, "inserted": inserted, "seconds": timings})
    return 0


if __name__ == "__main__":
    sys.exit(main())
