"""Example job `tally`: the readings of a JSON Lines file, totalled per group in Postgres.

Each line of the source is `{"group": <integer>, "value": <integer>}`. The job is small on
purpose: it uses Postgres alone, and the tests run it to exercise what the engine offers every
job: run parameters (`--source`: another file is another run), steps, a verify step, a file
source, a filtered and a grouped keyset, a verb and a dry run.

Phases:
1. `stage` (step): the file staged into `<prefix>_stage_<run>` (worker.file_source: COPY in one
   transaction with its ledger row, so a stage killed mid-file is redone whole).
2. `rejects` (a keyset filtered to the staged lines that are not two integers): each recorded
   as a failure, named `file:line`.
3. `create_totals` (step): `<prefix>_totals (run, grp, readings, total)`, if missing.
4. `totals` (a grouped keyset over the usable lines, by group): a batch holds whole groups, and
   writes each group's count and sum from its own rows, so a split group would be wrong.
5. `check` (verify step): every group's row agrees with the staged lines, or the run fails.

Verb: `python -m worker report --job tally --source FILE [--group N] [--json]`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from psycopg import sql

from utils.keyset import GroupedKeysetQuery, Key, KeyKind, KeysetQuery
from worker.config import TableName
from worker.exceptions import VerificationFailed
from worker.file_source import FileSource, JsonLines
from worker.job import Argument, BatchResult, Counters, Failure, Job, JobContext, KeysetPhase, Page, Phase, Row, Step, verb
from worker.job_settings import setting

#: A staged line the totals can use: both fields integers (of at most 9 and 15 digits).
USABLE = sql.SQL("error IS NULL AND grp ~ '^-?[0-9]{1,9}$' AND value ~ '^-?[0-9]{1,15}$'")


@dataclass(frozen=True)
class TallySettings:
    source: Path | None = setting(
        "TALLY_SOURCE", None, 'JSON Lines file of readings, one {"group": int, "value": int} per line.',
        flag="--source", identity=True, required=True,
    )
    tables: TableName = setting(
        "TALLY_TABLES", TableName("public", "tally"),
        "Schema and name prefix of the job's tables: <prefix>_totals, and per run <prefix>_stage_<run> and <prefix>_files_<run>.",
    )


class Tables:
    """The job's table names for one run."""

    def __init__(self, ctx: JobContext, tag: str):
        prefix: TableName = ctx.job_settings.tables
        self.totals = sql.Identifier(prefix.schema, f"{prefix.name}_totals")
        self.source = FileSource(
            ctx, ctx.job_settings.source, JsonLines(),
            staging=TableName(prefix.schema, f"{prefix.name}_stage_{tag}"),
            ledger=TableName(prefix.schema, f"{prefix.name}_files_{tag}"),
            columns=("grp", "value"), aliases={"group": "grp"},
        )


class Stage(Step):
    name = "stage"

    def __init__(self, tables: Tables):
        self.tables = tables

    def run(self) -> BatchResult:
        return self.tables.source.stage().result()


class Rejects(KeysetPhase):
    name = "rejects"
    scanned_counter = "rejected"

    def __init__(self, ctx: JobContext, tables: Tables):
        self.ctx = ctx
        self.query = KeysetQuery(tables.source.staging, "seq", ("file", "line", "error"), filter=sql.SQL("NOT ({})").format(USABLE))

    def fetch(self, after: Key | None, limit: int) -> Sequence[Row]:
        return self.query.page(self.ctx.pg.connection(), after, limit)

    def process(self, rows: Sequence[Row]) -> BatchResult:
        failures = [Failure(f"{file}:{line}", error or "group and value must be integers") for _, file, line, error in rows]
        return BatchResult(failures=failures)


class CreateTotals(Step):
    name = "create_totals"

    def __init__(self, ctx: JobContext, tables: Tables):
        self.ctx, self.tables = ctx, tables

    def run(self) -> Counters:
        with self.ctx.sink.transaction() as tx:
            tx.write(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (run text, grp bigint, readings bigint NOT NULL, total numeric NOT NULL,"
                " PRIMARY KEY (run, grp))"
            ).format(self.tables.totals))
        return {}


class Totals(KeysetPhase):
    name = "totals"
    scanned_counter = "readings"
    row_errors = ()  # a batch is whole groups: never halved

    def __init__(self, ctx: JobContext, tables: Tables, run_name: str):
        self.ctx, self.tables, self.run_name = ctx, tables, run_name
        self.batch_size = ctx.settings.batch_size
        self.query = GroupedKeysetQuery(tables.source.staging, "grp", ("value",), filter=USABLE, row_key="seq")

    @property
    def key_kind(self) -> KeyKind:
        return KeyKind.TEXT  # staged as text: the walk orders groups as text does

    def prepare(self, resuming: bool) -> None:
        self.tables.source.index_by("grp")

    def fetch(self, after: Key | None, limit: int) -> Sequence[Row]:
        page = self.query.page(self.ctx.pg.connection(), after, limit)
        return Page(len(page.rows), page.last_group, None, rows=lambda: page.rows, final=page.final)

    def tally(self, rows: Sequence[Row]) -> Counters:
        return {"groups": len({row[0] for row in rows})}

    def process(self, rows: Sequence[Row]) -> BatchResult:
        with self.ctx.sink.transaction() as tx:
            tx.write(
                sql.SQL(
                    "INSERT INTO {} (run, grp, readings, total) SELECT %s, g, count(*), sum(v)"
                    " FROM unnest(%s::bigint[], %s::bigint[]) AS r(g, v) GROUP BY g"
                    " ON CONFLICT (run, grp) DO UPDATE SET readings = excluded.readings, total = excluded.total"
                ).format(self.tables.totals),
                (self.run_name, [int(r[0]) for r in rows], [int(r[1]) for r in rows]),
            )
        return BatchResult()


class Check(Step):
    name = "check"
    verifies = True

    def __init__(self, ctx: JobContext, tables: Tables, run_name: str):
        self.ctx, self.tables, self.run_name = ctx, tables, run_name

    def run(self) -> Counters:
        staged = sql.SQL("SELECT grp::bigint AS grp, count(*) AS readings, sum(value::bigint) AS total FROM {} WHERE {} GROUP BY 1").format(
            self.tables.source.staging, USABLE
        )
        with self.ctx.sink.transaction() as tx:
            rows = tx.read(
                sql.SQL(
                    "SELECT coalesce(s.grp, t.grp), s.readings, s.total, t.readings, t.total FROM ({}) s"
                    " FULL JOIN (SELECT * FROM {} WHERE run = %s) t ON t.grp = s.grp ORDER BY 1"
                ).format(staged, self.tables.totals),
                (self.run_name,),
            )
        wrong = [r for r in rows if (r[1], r[2]) != (r[3], r[4])]
        if wrong:
            examples = "; ".join(f"group {g}: file {fr}/{ft}, totals {tr}/{tt}" for g, fr, ft, tr, tt in wrong[:3])
            raise VerificationFailed(f"{len(wrong)} of {len(rows)} groups disagree with the staged lines (readings/total), e.g. {examples}")
        return {"groups_checked": len(rows)}


class TallyJob(Job):
    name = "tally"
    checkpoint_id = "tally"
    settings_class = TallySettings

    def phases(self) -> Sequence[Phase]:
        tables = Tables(self.ctx, self.run.tag)
        return (
            Stage(tables), Rejects(self.ctx, tables), CreateTotals(self.ctx, tables),
            Totals(self.ctx, tables, self.run.name), Check(self.ctx, tables, self.run.name),
        )

    def check(self) -> None:
        Tables(self.ctx, self.run.tag).source.files()  # the source is there and readable

    @verb("report", "print the run's totals", Argument.of("--group", type=int, help="only this group"))
    def report(self, args: argparse.Namespace) -> dict[str, Any]:
        totals = Tables(self.ctx, self.run.tag).totals
        condition = sql.SQL(" AND grp = %s") if args.group is not None else sql.SQL("")
        with self.ctx.sink.transaction() as tx:
            if tx.read("SELECT to_regclass(%s)", (totals.as_string(None),))[0][0] is None:
                rows = []
            else:
                rows = tx.read(
                    sql.SQL("SELECT grp, readings, total FROM {} WHERE run = %s{} ORDER BY grp").format(totals, condition),
                    (self.run.name, *([args.group] if args.group is not None else [])),
                )
        return {
            "run": self.run.name,
            "source": str(self.ctx.job_settings.source),
            "groups": len(rows),
            "readings": sum(r[1] for r in rows),
            "total": sum(int(r[2]) for r in rows),
            "by_group": {str(g): {"readings": n, "total": int(t)} for g, n, t in rows},
        }
