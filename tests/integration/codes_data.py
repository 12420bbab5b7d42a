"""Seed 002's tables (tests/schemas/002_codes.sql) in a schema of their own, and folders of code
CSVs shaped like the seed's: mixed headers (`batch_id` or `batch_code`, some without `serial`),
duplicates within the files and against the codes already there, and the ground truth.

`generate` writes any number of rows for the kill tests and the benchmark; the tests' small
hand-written folder (with blank rows, a header-only file, an unknown header and invalid rows)
lives in the test module, where its expected counts are read beside it.
"""

from __future__ import annotations

import csv
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import psycopg

from utils import pg

SCHEMA_SQL = (Path(__file__).resolve().parents[1] / "schemas" / "002_codes.sql").read_text()
MERCHANTS = (uuid.UUID("7faab812-e179-48c2-9707-0d8a9b2f84ea"), uuid.UUID("0b9f4e0c-5d43-4c55-9a43-2f6a3c1e7d01"))
FLAGS = ("clean", "dup_internal", "dup_existing", "dup_both", "invalid")


def fresh_schema(conn: psycopg.Connection, schema: str) -> None:
    """`schema` made anew with seed 002's tables, and the connection's search_path set to it."""
    pg.fresh_schema(conn, schema, SCHEMA_SQL)


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


def codes_in(conn: psycopg.Connection) -> set[tuple[uuid.UUID, str]]:
    """Every (merchant, code) in `codes`."""
    return set(conn.execute("SELECT merchant_id, code FROM codes").fetchall())


def import_jobs(conn: psycopg.Connection) -> list[tuple]:
    """(id, status, total_codes_to_insert, codes_inserted, error_message) of every import job."""
    return conn.execute(
        "SELECT id, status, total_codes_to_insert, codes_inserted, error_message FROM codes_import_jobs ORDER BY created_at"
    ).fetchall()


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path
