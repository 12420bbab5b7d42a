"""The limit for staging in the codes_import benchmark: every file's raw bytes COPYed (FORMAT
csv, Postgres parsing) into an unlogged table of text columns, its header mapped to columns,
nothing else: no row numbers, no ledger, no key, no crash safety. Usage: python -m
bench.codes_import_limit DIR [logged] (connection from DB_*, schema from CODES_TABLE); `logged`:
into a logged table instead, for what the write-ahead log alone costs. Prints
`BENCH_RESULT {json}`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from bench.common import emit_result, pg_connect, settings_from_env


def main() -> int:
    folder = Path(sys.argv[1])
    kind = "" if sys.argv[2:] == ["logged"] else "UNLOGGED"
    schema = os.environ["CODES_TABLE"].split(".")[0]
    rows = 0
    with pg_connect(settings_from_env(), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        conn.execute(
            f"CREATE {kind} TABLE codes_raw (merchant_id text, code text, serial text, sku text, points text, sku_name text, batch_code text, price text)"
        )
        started = time.monotonic()
        for path in sorted(folder.glob("*.csv")):
            with path.open("rb") as f:
                header = [{"batch_id": "batch_code"}.get(h, h) for h in f.readline().decode().strip().split(",")]
                with conn.cursor() as cur:
                    with cur.copy(f"COPY codes_raw ({', '.join(header)}) FROM STDIN (FORMAT csv)") as copy:
                        while data := f.read(1 << 20):
                            copy.write(data)
                    rows += cur.rowcount
        seconds = time.monotonic() - started
        conn.execute("DROP TABLE codes_raw")
    emit_result({"rows": rows, "seconds": {"stage": seconds}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
