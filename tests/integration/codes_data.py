"""What the codes_import tests read back, and their small hand-written CSVs. The tables and the
generated folders are the demo's (worker.tables, worker.demo_codes.generate); the tests' small
folder (with blank rows, a header-only file, an unknown header and invalid rows) lives in the
test module, where its expected counts are read beside it.
"""

from __future__ import annotations

import csv
import uuid
from pathlib import Path
from typing import Sequence

import psycopg


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
