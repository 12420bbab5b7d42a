"""Demo data for the codes_import job: its tables with codes already there, and a folder of CSVs.

    python -m worker.demo_codes --out DIR [--rows 20000] [--files 8] [--existing 10000]

Creates the job's tables (worker/jobs/codes_import/tables.sql) in CODES_TABLE's schema unless
`codes` exists, with `--existing` codes in it (as production has them, from no import); then
writes DIR as merchants send their codes: mixed headers (`batch_id` or `batch_code`, some files
without `serial`), codes already in the table, and codes repeated within the files. The same
arguments give the same files, so the import of a demo started again finds its run completed.
The tests and the benchmark write their folders with `generate` too.
"""

from __future__ import annotations

import argparse
import csv
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from worker.demo import configure, job_tables
from worker.jobs.codes_import import CodesImportJob

MERCHANTS = (uuid.UUID("7faab812-e179-48c2-9707-0d8a9b2f84ea"), uuid.UUID("0b9f4e0c-5d43-4c55-9a43-2f6a3c1e7d01"))
#: The import's verdicts, each a counter of the job (a generated folder has no invalid row).
FLAGS = ("clean", "dup_internal", "dup_existing", "dup_both", "invalid")


def code_of(number: int) -> tuple[uuid.UUID, str]:
    """The merchant and code of code number `number` (merchants alternate)."""
    return MERCHANTS[number % 2], f"NBD{number:010d}"


def add_existing(conn: psycopg.Connection, count: int) -> None:
    """Codes 0 .. count-1, as production has them before the import (no import job)."""
    conn.execute(
        "INSERT INTO codes (merchant_id, code, sku, points, source)"
        " SELECT (%s::uuid[])[n %% 2 + 1], 'NBD' || lpad(n::text, 10, '0'), 'SKU-' || n %% 97, n %% 50, 'existing'"
        " FROM generate_series(0, %s - 1) n",
        (list(MERCHANTS), count),
    )


@dataclass
class Generated:
    """A generated folder's files, and what the import must find in them."""

    files: list[Path]
    truth: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLAGS, 0))
    #: The (merchant, code) pairs the import adds.
    clean: set[tuple[uuid.UUID, str]] = field(default_factory=set)


def generate(folder: Path, rows: int, files: int, existing: int, existing_share: float = 0.28, repeat_every: int = 50) -> Generated:
    """`rows` data rows over `files` CSV files in `folder`. Row i names code number
    i + existing - existing_share * rows, so the first `existing_share` of the rows are codes
    already there; every `repeat_every`-th row repeats the code of the row 7 before it (a
    duplicate within the files, of an existing code or not). Even files say `batch_id`, odd ones
    `batch_code`; every third file has no `serial` column."""
    folder.mkdir(parents=True, exist_ok=True)
    first = existing - int(existing_share * rows)
    result = Generated([])
    seen: set[int] = set()
    per_file = -(-rows // files)
    for f in range(files):
        columns = ["code", "merchant_id", *([] if f % 3 == 2 else ["serial"]), "sku", "points", "sku_name",
                   "batch_id" if f % 2 == 0 else "batch_code", "price"]
        path = folder / f"nbd_{f:02d}.csv"
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(columns)
            for i in range(f * per_file, min(rows, (f + 1) * per_file)):
                number = first + (i - 7 if i % repeat_every == repeat_every - 1 and i >= 7 else i)
                merchant, code = code_of(number)
                values = {"code": code, "merchant_id": str(merchant), "serial": f"S{i}", "sku": f"SKU-{i % 97}",
                          "points": str(i % 50), "sku_name": f"Voucher {i % 97}", "batch_id": f"B{f}", "batch_code": f"B{f}",
                          "price": f"{i % 10}.50"}
                writer.writerow([values[c] for c in columns])
                internal, in_db = number in seen, 0 <= number < existing
                seen.add(number)
                flag = "dup_both" if internal and in_db else "dup_internal" if internal else "dup_existing" if in_db else "clean"
                result.truth[flag] += 1
                if flag == "clean":
                    result.clean.add((merchant, code))
        result.files.append(path)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.demo_codes", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the CSV files to")
    parser.add_argument("--rows", type=int, default=20_000, help="rows over all the files (default 20,000)")
    parser.add_argument("--files", type=int, default=8, help="number of CSV files (default 8)")
    parser.add_argument("--existing", type=int, default=10_000, help="codes already in the table (default 10,000; at least 28%% of --rows)")
    args = parser.parse_args(argv)
    settings, job_settings = configure("demo_codes", CodesImportJob)
    codes = job_settings.codes
    with job_tables(settings, "codes_import", codes) as (conn, created):
        if created:
            add_existing(conn, args.existing)
    data = generate(args.out, args.rows, args.files, args.existing)
    print(f"demo_codes: {codes}: " + (f"created with {args.existing} codes" if created else "exists already, left as it is")
          + f"; {args.rows} rows in {args.files} files written to {args.out} (expected verdicts: {data.truth});"
          f" import them with: python -m worker run --job codes_import --source {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
