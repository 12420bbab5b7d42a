"""Codes import (seed 002): a folder of code CSVs into `codes`, duplicates flagged, one audited
insert that can be verified and rolled back.

`python -m worker run --job codes_import --source DIR [--atomic] [--dry-run]`
`python -m worker rollback --job codes_import --import-job-id UUID --yes [--include-claimed]`
`python -m worker report --job codes_import --source DIR --out FILE.csv [--duplicates-only]`

Phases, each resumable (mark.py, insert.py):
1. `stage` (step): every `*.csv` COPYed into the run's staging table, one transaction per file.
2. `mark`: each staged row's verdict, by key-range batches: clean, dup_internal, dup_existing,
   dup_both or invalid (rows.py); the counters add up to the staged rows.
3. `open_import` (step): the `codes_import_jobs` row, `processing`.
4. `insert`: the clean codes, by batches (or all at once with `--atomic`), stamped with its id.
5. `verify` (verify step): the counts agree; the row becomes `completed` (or `failed`).
6. `clear_staging` (step): the run's tables dropped, unless CODES_KEEP_STAGING=true.

The source folder names the run: the same folder resumes, another is another run.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any, Sequence

from worker.exceptions import ConfigError, SchemaMismatch
from worker.job import Argument, Job, Phase, require_columns, verb
from worker.jobs.codes_import.insert import ClearStaging, ImportRecord, Insert, InsertAll, OpenImport, Verify
from worker.jobs.codes_import.mark import Mark, Stage
from worker.jobs.codes_import.rows import COLUMNS, Tables
from worker.jobs.codes_import.settings import CodesImportSettings
from worker.jobs.codes_import.verbs import export, rollback
from worker.tables import table_hint

#: What the job needs of each table: its columns, and the unique key ON CONFLICT names.
NEEDED = {
    "codes": (*COLUMNS, "id", "claimed", "import_job_id", "source"),
    "jobs": ("id", "merchant_id", "status", "total_codes_to_insert", "codes_inserted", "validation_passed",
             "validation_errors", "completed_at", "rolled_back_at", "error_message", "source_info", "created_at"),
}


class CodesImportJob(Job):
    name = "codes_import"
    checkpoint_id = "codes_import"
    settings_class = CodesImportSettings

    def phases(self) -> Sequence[Phase]:
        settings: CodesImportSettings = self.ctx.job_settings
        tables = Tables(self.ctx, self.run.tag)
        record = ImportRecord(self.ctx, self.run.name)
        insert = InsertAll(self.ctx, tables, record) if settings.atomic else Insert(self.ctx, tables, record)
        return (
            Stage(tables), Mark(self.ctx, tables, record.codes), OpenImport(self.ctx, tables, record), insert,
            Verify(self.ctx, tables, record), ClearStaging(tables, settings.keep_staging),
        )

    def check(self) -> None:
        if self.ctx.job_settings.source is not None:
            Tables(self.ctx, self.run.tag).source.files()  # the source is there and readable
        record = ImportRecord(self.ctx, self.run.name)
        for kind, table, needs, variable in (
            ("codes", record.codes, "its codes table", "CODES_TABLE"),
            ("jobs", record.table, "its import audit table", "CODES_IMPORT_JOBS_TABLE"),
        ):
            require_columns(self.ctx.pg, table, NEEDED[kind], self.name, needs, variable)
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(
                "SELECT 1 FROM pg_index i WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indpred IS NULL"
                " AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a"
                "      WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = ARRAY['code', 'merchant_id'] AND i.indnkeyatts = 2",
                (record.codes.as_string(cur),),
            )
            if cur.fetchone() is None:
                raise SchemaMismatch(
                    f"{record.codes.as_string(None)} has no unique index on (code, merchant_id), which the import inserts against"
                    f" ({table_hint(self.name, 'CODES_TABLE')})"
                )

    @verb(
        "rollback", "delete an import's codes (claimed ones kept unless --include-claimed)",
        Argument.of("--import-job-id", required=True, type=uuid.UUID, help="the import's id (codes_import_jobs.id)"),
        Argument.of("--include-claimed", action="store_true", help="delete codes customers have claimed too"),
        Argument.of("--yes", action="store_true", help="confirm"),
        names_run=False,
    )
    def rollback(self, args: argparse.Namespace) -> dict[str, Any]:
        if not args.yes and not self.ctx.settings.dry_run:
            raise ConfigError("--yes", "is required: a rollback deletes the import's codes (or add --dry-run to see what it would delete)")
        return rollback(self.ctx, ImportRecord(self.ctx, self.run.name), args.import_job_id, args.include_claimed)

    @verb(
        "report", "write every staged row with its status (CLEAN, INTERNAL_DUPLICATE, ...) as CSV",
        Argument.of("--out", required=True, type=Path, help="the CSV file to write"),
        Argument.of("--duplicates-only", action="store_true", help="only the rows that are duplicates"),
    )
    def report(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"run": self.run.name, **export(self.ctx, Tables(self.ctx, self.run.tag), args.out, args.duplicates_only)}
