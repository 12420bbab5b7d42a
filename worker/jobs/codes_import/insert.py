"""The import proper: its audit row, the clean codes inserted, the result checked and recorded.

- `open_import` (step): the `codes_import_jobs` row, status `processing`, in a transaction of its
  own, so it outlives anything rolled back later. The run finds it again by `source_info.run`:
  a restart (even after a `reset`) continues the same import instead of opening another.
- `insert`: the clean rows in batches by `seq`, each batch one transaction that inserts its codes
  stamped with the import's id (`ON CONFLICT (code, merchant_id) DO NOTHING`) and adds what it
  inserted to the row's `codes_inserted`. Nothing is locked but the rows written. A code someone
  else inserted since `mark` is `race_skipped`, not an error. Counters are read back from
  `codes` (ours, or another's), so a batch redone after a crash counts the same.
  With `--atomic`, the same statement once for every clean row (all or nothing).
- `verify` (verify step): `codes_inserted`, the codes carrying the id, the clean rows and the
  race-skipped ones must agree; the row becomes `completed`, or `failed` with the reason.
- `clear_staging` (step): the run's own tables dropped, unless CODES_KEEP_STAGING.
"""

from __future__ import annotations

import uuid
from typing import Sequence

import structlog
from psycopg import sql
from psycopg.types.json import Jsonb

from utils.keyset import Key, KeysetQuery
from worker.exceptions import SchemaMismatch, VerificationFailed
from worker.job import BatchResult, Counters, JobContext, KeysetPhase, Page, Row, Step
from worker.jobs.codes_import.rows import COLUMNS, Tables, clean, seq_condition, typed
from worker.sinks import Transaction

log = structlog.get_logger("worker.jobs.codes_import")


class ImportRecord:
    """The run's row in the import audit table."""

    def __init__(self, ctx: JobContext, run_name: str):
        self.ctx, self.run_name = ctx, run_name
        settings = ctx.job_settings
        self.table = sql.Identifier(settings.jobs.schema, settings.jobs.name)
        self.codes = sql.Identifier(settings.codes.schema, settings.codes.name)

    def find(self, tx: Transaction) -> uuid.UUID | None:
        """The run's open import (`processing`, or `failed` by verify and being run again)."""
        found = tx.read(
            sql.SQL("SELECT id FROM {} WHERE source_info->>'run' = %s AND status IN ('processing', 'failed') ORDER BY created_at DESC LIMIT 1").format(self.table),
            (self.run_name,),
        )
        return found[0][0] if found else None

    def current(self) -> uuid.UUID | None:
        with self.ctx.sink.transaction() as tx:
            return self.find(tx)

    def require(self) -> uuid.UUID | None:
        """The open import's id, which `open_import` made; None only in a dry run, which made none."""
        found = self.current()
        if found is None and not self.ctx.settings.dry_run:
            raise SchemaMismatch(
                f"run {self.run_name} has no open import in {self.table.as_string(None)} (processing or failed): was its row"
                " changed by hand? `reset` the run to open a new import"
            )
        return found


class OpenImport(Step):
    name = "open_import"

    def __init__(self, ctx: JobContext, tables: Tables, record: ImportRecord):
        self.ctx, self.tables, self.record = ctx, tables, record

    def run(self) -> Counters:
        marks, rows = self.tables.marks, self.tables.rows
        with self.ctx.sink.transaction() as tx:
            found = self.record.find(tx)
            if found is not None:
                log.info("import job found; continuing it", import_job_id=str(found))
                return {}
            [(total, first, last)] = tx.read(
                sql.SQL("SELECT count(*), min({m}), max({m}) FROM {marks} m JOIN {rows} s ON s.seq = m.seq WHERE {clean}").format(
                    m=sql.SQL("{}::text").format(typed("s")["merchant_id"]), marks=marks, rows=rows, clean=clean("m")
                ),
            )
            invalid = tx.read(
                sql.SQL("SELECT s.file, s.line, m.problem FROM {marks} m JOIN {rows} s ON s.seq = m.seq WHERE m.problem IS NOT NULL ORDER BY m.seq LIMIT 20").format(marks=marks, rows=rows)
            )
            source_info = {
                "run": self.record.run_name,
                "source": str(self.ctx.job_settings.source),
                "files": [e.path for e in self.tables.source.entries()],
            }
            created = tx.write_returning(
                sql.SQL(
                    "INSERT INTO {} (merchant_id, status, total_codes_to_insert, codes_inserted, validation_passed, validation_errors, source_info)"
                    " VALUES (%s, 'processing', %s, 0, %s, %s, %s) RETURNING id"
                ).format(self.record.table),
                (
                    first if first == last else None, total, not invalid,
                    Jsonb([{"file": f, "line": n, "problem": p} for f, n, p in invalid]) if invalid else None, Jsonb(source_info),
                ),
            )
        if created:
            log.info("import job opened: keep its id to roll it back", import_job_id=str(created[0][0]), codes_to_insert=total)
        return {"import_jobs_opened": 1}


def _insert_statement(tables: Tables, codes: sql.Identifier, condition: sql.Composable) -> sql.Composable:
    """Insert the clean rows matching `condition` (on marks `m`) stamped with the import id (the
    first parameter, then the condition's)."""
    values = typed("s")
    return sql.SQL(
        "INSERT INTO {codes} ({columns}, import_job_id, source)"
        " SELECT {values}, %s, s.file FROM {marks} m JOIN {rows} s ON s.seq = m.seq WHERE {condition} AND {clean} ORDER BY m.seq"
        " ON CONFLICT (code, merchant_id) DO NOTHING"
    ).format(
        codes=codes, columns=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), values=sql.SQL(", ").join(values[c] for c in COLUMNS),
        marks=tables.marks, rows=tables.rows, condition=condition, clean=clean("m"),
    )


def _outcome(tx: Transaction, tables: Tables, codes: sql.Identifier, condition: sql.Composable, params: tuple, import_id: uuid.UUID | None) -> Counters:
    """Of the clean rows matching `condition`: inserted (the code carries this import's id; in a
    dry run, no code has it yet), and race_skipped (another has it)."""
    values = typed("s")
    [(inserted, skipped)] = tx.read(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE x.id IS NULL OR x.import_job_id = %s), count(*) FILTER (WHERE x.import_job_id IS DISTINCT FROM %s AND x.id IS NOT NULL)"
            " FROM {marks} m JOIN {rows} s ON s.seq = m.seq LEFT JOIN {codes} x ON x.code = {code} AND x.merchant_id = {merchant}"
            " WHERE {condition} AND {clean}"
        ).format(marks=tables.marks, rows=tables.rows, codes=codes, code=values["code"], merchant=values["merchant_id"], condition=condition, clean=clean("m")),
        (import_id, import_id, *params),
    )
    return {"inserted": inserted, "race_skipped": skipped}


def _insert(ctx: JobContext, tables: Tables, record: ImportRecord, import_id: uuid.UUID | None, condition: sql.Composable, params: tuple) -> Counters:
    with ctx.sink.transaction() as tx:
        added = tx.write(_insert_statement(tables, record.codes, condition), (import_id, *params))
        if added:
            tx.write(sql.SQL("UPDATE {} SET codes_inserted = coalesce(codes_inserted, 0) + %s WHERE id = %s").format(record.table), (added, import_id))
        return _outcome(tx, tables, record.codes, condition, params, import_id)


class Insert(KeysetPhase):
    name = "insert"

    def __init__(self, ctx: JobContext, tables: Tables, record: ImportRecord):
        self.ctx, self.tables, self.record = ctx, tables, record
        self.batch_size = ctx.settings.batch_size
        self.query = KeysetQuery(tables.marks, "seq", (), filter=clean(None))
        self.import_id: uuid.UUID | None = None

    def prepare(self, resuming: bool) -> None:
        self.import_id = self.record.require()

    def count(self) -> int:
        with self.ctx.sink.scratch_transaction() as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {} m WHERE {}").format(self.tables.marks, clean("m")))
            return int(cur.fetchone()[0])

    def fetch(self, after: Key | None, limit: int) -> Sequence[Row]:
        conn = self.ctx.pg.connection()
        size, last = self.query.summary(conn, after, limit)
        return Page(size, last, ("range", after, last), rows=lambda: self.query.span(conn, after, last))

    def fetch_keys(self, keys: Sequence[Key]) -> Sequence[Row]:
        return self.query.by_keys(self.ctx.pg.connection(), keys)

    def process(self, rows: Sequence[Row]) -> BatchResult:
        condition, params = seq_condition(rows, "m")
        return BatchResult(_insert(self.ctx, self.tables, self.record, self.import_id, condition, params))


class InsertAll(Step):
    """`--atomic`: every clean row in one transaction; interrupted, it is redone whole."""

    name = "insert"

    def __init__(self, ctx: JobContext, tables: Tables, record: ImportRecord):
        self.ctx, self.tables, self.record = ctx, tables, record

    def run(self) -> Counters:
        return _insert(self.ctx, self.tables, self.record, self.record.require(), sql.SQL("true"), ())


class Verify(Step):
    name = "verify"
    verifies = True

    def __init__(self, ctx: JobContext, tables: Tables, record: ImportRecord):
        self.ctx, self.tables, self.record = ctx, tables, record

    def run(self) -> Counters:
        import_id = self.record.require()
        with self.ctx.sink.transaction() as tx:
            [(recorded,)] = tx.read(sql.SQL("SELECT codes_inserted FROM {} WHERE id = %s").format(self.record.table), (import_id,))
            [(carrying,)] = tx.read(sql.SQL("SELECT count(*) FROM {} WHERE import_job_id = %s").format(self.record.codes), (import_id,))
            [(clean_rows,)] = tx.read(sql.SQL("SELECT count(*) FROM {} m WHERE {}").format(self.tables.marks, clean("m")))
            outcome = _outcome(tx, self.tables, self.record.codes, sql.SQL("true"), (), import_id)
            problems = []
            if carrying != recorded:
                problems.append(f"{carrying} codes carry the import's id but its row says codes_inserted = {recorded}")
            if outcome["inserted"] != carrying:
                problems.append(f"{outcome['inserted'] - carrying} clean rows are in no code of the table")
            if outcome["inserted"] + outcome["race_skipped"] != clean_rows:
                problems.append(f"{clean_rows} clean rows, but {outcome['inserted']} inserted + {outcome['race_skipped']} race_skipped")
            if problems:
                reason = "; ".join(problems)
                tx.write(sql.SQL("UPDATE {} SET status = 'failed', error_message = %s WHERE id = %s").format(self.record.table), (f"verify: {reason}", import_id))
            else:
                tx.write(
                    sql.SQL("UPDATE {} SET status = 'completed', completed_at = now(), error_message = NULL WHERE id = %s").format(self.record.table),
                    (import_id,),
                )
        if problems:
            raise VerificationFailed(f"import {import_id}: {reason}")
        log.info("import completed", import_job_id=str(import_id), codes_inserted=carrying, race_skipped=outcome["race_skipped"])
        return {"codes_verified": carrying}


class ClearStaging(Step):
    name = "clear_staging"

    def __init__(self, tables: Tables, keep: bool):
        self.tables, self.keep = tables, keep

    def run(self) -> Counters:
        if self.keep:
            log.info("staging kept (CODES_KEEP_STAGING)", rows=self.tables.rows.as_string(None), marks=self.tables.marks.as_string(None))
            return {}
        self.tables.drop()
        return {}

