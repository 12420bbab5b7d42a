"""The facts of the source written into the table, one transaction per batch of whole parents.

The staged facts are walked in three phases: `rejects` (a keyset filtered to the rows that give
no parent or both: failures), then `poi_facts` and `area_facts` (keysets grouped by `poi_id` and
by `area_id`), whose batches hold every fact of each of their parents, whatever BATCH_SIZE says.

Per batch, in one transaction, the rows are judged against the table (table.FactsTable): a row
the table would refuse is a recorded failure and the others are written. A fact whose content
the table already has (its hash, or for a row written without one its content) is not written
again. With `--force`, the facts of the batch's parents that the source no longer has are
deleted in the same transaction; a fact still in the source keeps its row, its id and its
`verified_at`. Counters (`inserted`, `dup_in_input`, `dup_existing`, `failed`, `deleted_stale`)
are read before the write and kept with the batch's intent, so a batch redone after a crash
deletes nothing twice and counts nothing twice.
"""

from __future__ import annotations

from typing import Any, Sequence

from psycopg import sql

from utils.keyset import GroupedKeysetQuery, Key, KeyKind, KeysetQuery
from worker.file_source import FileSource
from worker.job import BatchResult, Counters, Failure, JobContext, KeysetPhase, Page, Row
from worker.jobs.place_knowledge.table import HASH_COLUMN, IMPORTED, FactsTable

_ONE_PARENT = sql.SQL("(poi_id IS NULL) <> (area_id IS NULL)")


class Rejects(KeysetPhase):
    """Staged rows with no parent or two (a line that is not JSON has neither): failures."""

    name = "rejects"
    scanned_counter = "failed"

    def __init__(self, ctx: JobContext, source: FileSource):
        self.ctx = ctx
        self.query = KeysetQuery(source.staging, "seq", ("file", "line", "error"), filter=sql.SQL("NOT ({})").format(_ONE_PARENT))

    def fetch(self, after: Key | None, limit: int) -> Sequence[Row]:
        return self.query.page(self.ctx.pg.connection(), after, limit)

    def fetch_keys(self, keys: Sequence[Key]) -> Sequence[Row]:
        return self.query.by_keys(self.ctx.pg.connection(), keys)

    def process(self, rows: Sequence[Row]) -> BatchResult:
        return BatchResult(failures=[
            Failure(str(seq), f"{file}:{line}: {error or 'give exactly one of poi_id and area_id'}") for seq, file, line, error in rows
        ])


class ParentFacts(KeysetPhase):
    """The facts of one kind of parent (`poi_id` or `area_id`), in batches of whole parents."""

    row_errors = ()  # a batch is whole parents: never halved (a bad row is judged, not raised)

    def __init__(self, ctx: JobContext, source: FileSource, table: FactsTable, parent: str, force: bool):
        self.ctx, self.source, self.table, self.parent, self.force = ctx, source, table, parent, force
        self.name = f"{parent.removesuffix('_id')}_facts"
        self.scanned_counter = "facts_read"
        self.batch_size = ctx.settings.batch_size
        other = "area_id" if parent == "poi_id" else "poi_id"
        self.other = other
        self.query = GroupedKeysetQuery(
            source.staging, parent, ("seq",), row_key="seq",
            filter=sql.SQL("{} IS NOT NULL AND {} IS NULL").format(sql.Identifier(parent), sql.Identifier(other)),
        )

    @property
    def key_kind(self) -> KeyKind:
        return KeyKind.TEXT

    def prepare(self, resuming: bool) -> None:
        self.table.describe()

    def fetch(self, after: Key | None, limit: int) -> Sequence[Row]:
        conn = self.ctx.pg.connection()
        size, last, final = self.query.summary(conn, after, limit)
        return Page(size, last, ("parents", after, last), rows=lambda: self.query.span(conn, after, last), final=final)

    def fetch_keys(self, keys: Sequence[Key]) -> Sequence[Row]:
        """Failed rows again, alone (`retry`, once a missing POI exists, say): written if they
        pass now, but never a reason to delete (the rest of their parent is not in the batch)."""
        seqs = [int(k) for k in keys]  # type: ignore[arg-type]
        return Page(len(seqs), None, ("rows", seqs), rows=lambda: [(None, s) for s in seqs])

    def _batch(self, rows: Sequence[Row]) -> tuple[sql.Composable, tuple[Any, ...], bool]:
        """The batch as a condition on staging alias `s`, its parameters, and whether it holds
        whole parents. `rows` is always a Page (fetch, fetch_keys): the engine never halves a
        batch of this phase."""
        kind, *bounds = rows.summary  # type: ignore[attr-defined]
        p, o = sql.Identifier(self.parent), sql.Identifier(self.other)
        if kind == "rows":
            return sql.SQL("s.seq = ANY(%s)"), (bounds[0],), False
        after, last = bounds
        if after is None:
            return sql.SQL("s.{p} <= %s AND s.{o} IS NULL").format(p=p, o=o), (last,), True
        return sql.SQL("s.{p} > %s AND s.{p} <= %s AND s.{o} IS NULL").format(p=p, o=o), (after, last), True

    def _with_candidates(self, condition: sql.Composable) -> sql.Composable:
        return sql.SQL("WITH c AS MATERIALIZED ({}) ").format(self.table.candidates(self.source.staging, condition))

    def _known(self, row: str) -> sql.Composable:
        """Whether the table has the content of candidate `row` (by parent and topic: its index)."""
        return sql.SQL("EXISTS (SELECT 1 FROM {t} e WHERE e.{p} = {r}.{p} AND e.topic = {r}.topic AND {h} = {r}.content_hash)").format(
            t=self.table.ident, p=sql.Identifier(self.parent), r=sql.Identifier(row), h=self.table.existing_hash("e")
        )

    def _stale(self) -> sql.Composable:
        """The table's facts of the batch's parents that no staged row of theirs has."""
        return sql.SQL(
            "FROM {t} e WHERE e.{p} IN (SELECT {p} FROM c) AND NOT EXISTS (SELECT 1 FROM c WHERE c.{p} = e.{p} AND c.content_hash = {h})"
        ).format(t=self.table.ident, p=sql.Identifier(self.parent), h=self.table.existing_hash("e"))

    def tally(self, rows: Sequence[Row]) -> Counters:
        condition, params, whole = self._batch(rows)
        stale = sql.SQL("(SELECT count(*) {})").format(self._stale()) if self.force and whole else sql.SQL("0")
        statement = self._with_candidates(condition) + sql.SQL(
            ", v AS (SELECT DISTINCT ON (content_hash) * FROM c WHERE problem IS NULL ORDER BY content_hash, seq)"
            " SELECT (SELECT count(*) FROM c WHERE problem IS NOT NULL),"
            " (SELECT count(*) FROM c WHERE problem IS NULL) - (SELECT count(*) FROM v),"
            " (SELECT count(*) FROM v WHERE {known}), (SELECT count(*) FROM v WHERE NOT {known}), {stale}"
        ).format(known=self._known("v"), stale=stale)
        with self.ctx.sink.transaction() as tx:
            [(failed, dup_in_input, dup_existing, inserted, deleted)] = tx.read(statement, params)
        counters = {"failed": failed, "dup_in_input": dup_in_input, "dup_existing": dup_existing, "inserted": inserted}
        return counters | ({"deleted_stale": deleted} if self.force else {})

    def process(self, rows: Sequence[Row]) -> BatchResult:
        condition, params, whole = self._batch(rows)
        columns = sql.SQL(", ").join(map(sql.Identifier, (*IMPORTED, HASH_COLUMN)))
        with self.ctx.sink.transaction() as tx:
            if self.force and whole:
                tx.write(self._with_candidates(condition) + sql.SQL("DELETE {}").format(self._stale()), params)
            tx.write(
                self._with_candidates(condition) + sql.SQL(
                    "INSERT INTO {t} ({cols}) SELECT DISTINCT ON (content_hash) {cols} FROM c"
                    " WHERE problem IS NULL AND NOT {known} ORDER BY content_hash, seq"
                    " ON CONFLICT ({h}) DO NOTHING"
                ).format(t=self.table.ident, cols=columns, known=self._known("c"), h=sql.Identifier(HASH_COLUMN)),
                params,
            )
            refused = tx.read(self._with_candidates(condition) + sql.SQL("SELECT seq, file, line, problem FROM c WHERE problem IS NOT NULL ORDER BY seq"), params)
        return BatchResult(failures=[Failure(str(seq), f"{file}:{line}: {problem}") for seq, file, line, problem in refused])
