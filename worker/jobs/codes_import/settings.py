"""The codes_import job's settings: the source folder names the run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from worker.config import TableName
from worker.job_settings import setting


@dataclass(frozen=True)
class CodesImportSettings:
    source: Path | None = setting(
        "CODES_IMPORT_SOURCE", None,
        "A directory of *.csv files of codes (merchant_id, code, serial, sku, points, sku_name, batch_id or batch_code, price).",
        flag="--source", identity=True, required=True,
    )
    atomic: bool = setting(
        "CODES_IMPORT_ATOMIC", False,
        "Insert every clean code in one transaction (all or nothing; redone whole if interrupted) instead of one per batch.",
        flag="--atomic",
    )
    keep_staging: bool = setting(
        "CODES_KEEP_STAGING", False,
        "Keep the run's staging tables when the import completes (for `report`); by default they are dropped.",
    )
    codes: TableName = setting("CODES_TABLE", TableName("public", "codes"), "The codes table.")
    jobs: TableName = setting("CODES_IMPORT_JOBS_TABLE", TableName("public", "codes_import_jobs"), "The import audit table.")
    staging: TableName = setting(
        "CODES_IMPORT_STAGING", TableName("public", "codes_import"),
        "Schema and name prefix of the job's own tables, per run: <prefix>_rows_<run> (the staged rows),"
        " <prefix>_files_<run> (the file ledger) and <prefix>_marks_<run> (each row's verdict).",
    )
