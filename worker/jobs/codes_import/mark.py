"""The first two phases: the CSVs staged, then every staged row given its verdict.

`stage` copies the folder's files into the run's staging table through the engine's file source
(COPY, one transaction per file with its ledger row: no file twice, a file interrupted part way
is redone whole); a file with an unknown header is a recorded failure and the others go on.

`mark` walks the staged rows by `seq` (file, then line) in batches of key ranges, and per batch
writes each row's mark in one statement: invalid, a duplicate of an earlier valid row (found
through the staging index by key), a duplicate of a code already in `codes` (its unique index).
A batch depends on nothing another batch writes, so batches run side by side and one redone
after a crash writes what it wrote before (`ON CONFLICT DO NOTHING`); its counters are read
back from the marks, so they are exact either way.
"""

from __future__ import annotations

from typing import Sequence

from psycopg import sql

from utils.keyset import Key
from worker.job import BatchResult, JobContext, KeysetPhase, Page, Row, Step
from worker.jobs.codes_import.rows import NO_JIT, VERDICTS, Tables, code_key, merchant_key, problem, seq_condition, staged_code, typed, verdict_counts


class Stage(Step):
    name = "stage"

    def __init__(self, tables: Tables):
        self.tables = tables

    def run(self) -> BatchResult:
        report = self.tables.source.stage()
        self.tables.create()
        return report.result()


class Mark(KeysetPhase):
    name = "mark"
    row_errors = ()  # rows are judged by the statement, not refused by Postgres

    def __init__(self, ctx: JobContext, tables: Tables, codes: sql.Identifier):
        self.ctx, self.tables, self.codes = ctx, tables, codes
        self.batch_size = ctx.settings.batch_size
        self.query = tables.source.keyset(())

    def count(self) -> int:
        return self.tables.source.count()

    def fetch(self, after: Key | None, limit: int) -> Sequence[Row]:
        conn = self.ctx.pg.connection()
        size, last = self.query.summary(conn, after, limit)
        return Page(size, last, ("range", after, last), rows=lambda: self.query.span(conn, after, last))

    def process(self, rows: Sequence[Row]) -> BatchResult:
        condition, params = seq_condition(rows, "s")
        marked, _ = seq_condition(rows, "m")
        earlier = sql.SQL(
            "EXISTS (SELECT 1 FROM {rows} e WHERE {ecode} = j.ckey COLLATE \"C\" AND e.seq < j.seq AND {ekey} = j.mkey AND {eproblem} IS NULL)"
        ).format(rows=self.tables.rows, ecode=staged_code("e"), ekey=merchant_key("e"), eproblem=problem("e"))
        existing = sql.SQL("EXISTS (SELECT 1 FROM {codes} x WHERE x.code = j.ckey AND x.merchant_id = j.merchant)").format(codes=self.codes)
        with self.ctx.sink.scratch_transaction() as cur:
            cur.execute(NO_JIT)
            # Each row judged once (a MATERIALIZED CTE: inlined, the judgement would be
            # evaluated again in every expression that uses it).
            cur.execute(
                sql.SQL(
                    "WITH v AS MATERIALIZED (SELECT s.seq, s.merchant_id, {problem} AS problem, {mkey} AS mkey, {ckey} AS ckey FROM {rows} s WHERE {condition}),"
                    " j AS (SELECT v.*, CASE WHEN v.problem IS NULL THEN {merchant} END AS merchant FROM v)"
                    " INSERT INTO {marks} (seq, problem, internal_dup, existing_dup)"
                    " SELECT j.seq, j.problem, CASE WHEN j.problem IS NULL THEN {earlier} END, CASE WHEN j.problem IS NULL THEN {existing} END FROM j"
                    " ON CONFLICT (seq) DO NOTHING"
                ).format(
                    marks=self.tables.marks, earlier=earlier, existing=existing, merchant=typed("v")["merchant_id"],
                    problem=problem("s"), mkey=merchant_key("s"), ckey=code_key("s"), rows=self.tables.rows, condition=condition,
                ),
                params,
            )
            cur.execute(sql.SQL("SELECT {} FROM {} m WHERE {}").format(verdict_counts("m"), self.tables.marks, marked), params)
            counts = cur.fetchone()
        return BatchResult(dict(zip(VERDICTS, counts)))
