"""What an operator does with an import afterwards: roll it back, or export its rows' statuses.

**Rollback** deletes the import's codes in chunks of `id` ranges (the primary key; the import's
ids are a few close ranges), one transaction per chunk, so it never holds a long lock, can be
stopped at any moment and resumes by being run again. Codes a customer has `claimed` are kept
unless `--include-claimed`; they are counted and listed. The import's row becomes `rolled_back`
once none of its codes remain; until then it stays `completed`, the kept codes noted in
`error_message`.

**Report** streams `COPY (...) TO STDOUT` of every staged row with its status straight into the
output file (a temporary name, renamed when complete): no statement holds the rows, so its size
is the disk's business, not a timeout's.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import structlog
from psycopg import sql

from worker.exceptions import ConfigError, SourceError, WorkerError
from worker.job import JobContext
from worker.jobs.codes_import.insert import ImportRecord
from worker.jobs.codes_import.rows import COLUMNS, UNCHECKED, VERDICTS, Tables, problem, verdict

log = structlog.get_logger("worker.jobs.codes_import")
#: Claimed codes a rollback lists by code (all are counted).
LISTED_CLAIMED = 20


class RollbackRefused(WorkerError):
    """The import is not in a state a rollback may touch (still being inserted)."""


def rollback(ctx: JobContext, record: ImportRecord, import_id: uuid.UUID, include_claimed: bool) -> dict[str, Any]:
    codes, jobs = record.codes, record.table
    with ctx.sink.transaction() as tx:
        found = tx.read(sql.SQL("SELECT status FROM {} WHERE id = %s").format(jobs), (import_id,))
        if not found:
            raise ConfigError("--import-job-id", f"names no import in {jobs.as_string(None)}: {import_id}")
        status = found[0][0]
        if status in ("pending", "validating", "processing"):
            raise RollbackRefused(
                f"import {import_id} is {status}: a worker may still be inserting its codes; let the run finish"
                " (or fail verification) before rolling it back"
            )
        [(low, high, total, claimed)] = tx.read(
            sql.SQL("SELECT min(id), max(id), count(*), count(*) FILTER (WHERE claimed) FROM {} WHERE import_job_id = %s").format(codes),
            (import_id,),
        )
    deleted = 0
    chunk = max(ctx.settings.batch_size, 1000)
    keep = sql.SQL("") if include_claimed else sql.SQL(" AND NOT claimed")
    statement = sql.SQL("DELETE FROM {} WHERE id >= %s AND id < %s AND import_job_id = %s{}").format(codes, keep)
    start = low
    while start is not None and start <= high:
        ctx.stop.sleep(0)  # a stop ends the rollback between chunks; running it again goes on
        with ctx.sink.transaction() as tx:
            deleted += tx.write(statement, (start, start + chunk, import_id))
        start += chunk
    with ctx.sink.transaction() as tx:
        [(left, kept_codes)] = tx.read(
            sql.SQL("SELECT count(*), (array_agg(code ORDER BY id))[1:%s] FROM {} WHERE import_job_id = %s").format(codes),
            (LISTED_CLAIMED, import_id),
        )
        if left == 0:
            tx.write(sql.SQL("UPDATE {} SET status = 'rolled_back', rolled_back_at = now() WHERE id = %s").format(jobs), (import_id,))
        else:
            tx.write(
                sql.SQL("UPDATE {} SET error_message = %s WHERE id = %s").format(jobs),
                (f"rollback kept {left} claimed code(s); `rollback --include-claimed` removes them too", import_id),
            )
    to_delete = total - (0 if include_claimed else claimed)
    report = {
        "import_job_id": str(import_id),
        "status_before": status,
        "codes_before": total,
        "deleted": deleted,
        "kept_claimed": total - to_delete if ctx.settings.dry_run else left,
        "status": "rolled_back" if left == 0 else status,
        "claimed_kept_examples": [] if include_claimed else (kept_codes or []),
    }
    if ctx.settings.dry_run:
        report |= {"would_delete": to_delete, "status": status}
    log.info("rollback", **report)
    return report


def export(ctx: JobContext, tables: Tables, out: Path, duplicates_only: bool) -> dict[str, Any]:
    """Every staged row (or only the duplicates) with its status, as CSV into `out`."""
    if not tables.exist():
        raise SourceError(
            f"run {ctx.job_settings.source}: nothing staged (the staging tables are dropped when an import completes;"
            " CODES_KEEP_STAGING=true keeps them): run the import, or report before it completes"
        )
    status = verdict("m")
    where = sql.SQL("WHERE {} IN ({})").format(status, sql.SQL(", ").join(map(sql.Literal, (VERDICTS["dup_internal"], VERDICTS["dup_existing"], VERDICTS["dup_both"])))) if duplicates_only else sql.SQL("")
    select = sql.SQL(
        "SELECT s.file, s.line, {columns}, {status} AS status, coalesce(m.problem, CASE WHEN m.seq IS NULL THEN {unchecked_problem} END) AS problem"
        " FROM {rows} s LEFT JOIN {marks} m ON m.seq = s.seq {where}ORDER BY s.seq"
    ).format(
        columns=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in COLUMNS), status=status,
        unchecked_problem=problem("s"), rows=tables.rows, marks=tables.marks, where=where,
    )
    partial = out.with_name(f".{out.name}.partial")
    written = 0
    conn = ctx.pg.connection()
    with partial.open("wb") as f, conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(select)) as copy:
            for data in copy:
                ctx.stop.sleep(0)
                f.write(data)
                written += len(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, out)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT {} AS status, count(*) FROM {} s LEFT JOIN {} m ON m.seq = s.seq {}GROUP BY 1").format(status, tables.rows, tables.marks, where))
        by_status = dict(cur.fetchall())
    order = [*VERDICTS.values(), UNCHECKED]
    return {"out": str(out), "bytes": written, "rows": sum(by_status.values()), **{s: by_status[s] for s in order if s in by_status}}
