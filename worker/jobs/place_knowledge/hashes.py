"""The preflight: `content_hash` added, filled for the existing facts, then unique.

Rows that already share a content (a hash) would block the unique index. They are never deleted:
the one with the smallest id keeps the hash, and each other one is left without it, counted
(`existing_duplicates`) and recorded as a failure naming the fact it repeats, for a person to
decide. The fill does not touch `updated_at` where the job may bypass the table's trigger
(`session_replication_role`, a superuser's); elsewhere the trigger stamps the rows it hashes.
"""

from __future__ import annotations

from typing import Sequence

from psycopg import sql

from utils.keyset import Key, KeyKind, KeysetQuery
from worker.job import BatchResult, Counters, Failure, JobContext, KeysetPhase, Row, Step
from worker.jobs.place_knowledge.table import HASH_COLUMN, FactsTable, hash_of


class AddHashColumn(Step):
    name = "add_content_hash"

    def __init__(self, ctx: JobContext, table: FactsTable):
        self.ctx, self.table = ctx, table

    def tally(self) -> Counters:
        return {"content_hash_added": 0 if self.table.describe().has_hash else 1}

    def run(self) -> Counters:
        with self.ctx.sink.transaction() as tx:
            # A brief ACCESS EXCLUSIVE lock (no rewrite): give up rather than queue the
            # application's queries behind a long transaction; the retry tries again.
            tx.write(sql.SQL("SET LOCAL lock_timeout = '5s'"))
            tx.write(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} text").format(self.table.ident, sql.Identifier(HASH_COLUMN)))
        return {}


class HashExisting(KeysetPhase):
    """The existing facts without a hash, by id: each gets its hash unless a fact with a
    smaller id has the same content."""

    name = "hash_existing"
    scanned_counter = "existing_scanned"

    def __init__(self, ctx: JobContext, table: FactsTable):
        self.ctx, self.table = ctx, table
        self.batch_size = ctx.settings.batch_size
        self.query: KeysetQuery | None = None
        self.bypass_trigger = False

    @property
    def key_kind(self) -> KeyKind:
        return KeyKind.TEXT

    def prepare(self, resuming: bool) -> None:
        self.table.describe()
        missing = sql.SQL("{} IS NULL").format(sql.Identifier(HASH_COLUMN)) if self.table.has_hash else None
        self.query = KeysetQuery(self.table.ident, "id", (), filter=missing)
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            self.bypass_trigger = bool(cur.fetchone()[0])

    def fetch(self, after: Key | None, limit: int) -> Sequence[Row]:
        assert self.query is not None
        return self.query.page(self.ctx.pg.connection(), after, limit)

    def _judged(self) -> sql.Composable:
        """The batch's rows (`%s`: their ids) with their hash and the smallest id of an earlier
        fact with the same content, if any (by parent and topic: the table's indexes)."""
        t = self.table.ident
        return sql.SQL(
            "SELECT r.id, {h} AS h, coalesce("
            " (SELECT min(o.id) FROM {t} o WHERE r.poi_id IS NOT NULL AND o.poi_id = r.poi_id AND o.topic = r.topic AND o.id < r.id AND {ho} = {h}),"
            " (SELECT min(o.id) FROM {t} o WHERE r.area_id IS NOT NULL AND o.area_id = r.area_id AND o.topic = r.topic AND o.id < r.id AND {ho} = {h})"
            ") AS repeats FROM {t} r WHERE r.id = ANY(%s)"
        ).format(h=hash_of("r"), ho=hash_of("o"), t=t)

    def tally(self, rows: Sequence[Row]) -> Counters:
        with self.ctx.sink.transaction() as tx:
            [(hashed, repeated)] = tx.read(
                sql.SQL("SELECT count(*) FILTER (WHERE repeats IS NULL), count(*) FILTER (WHERE repeats IS NOT NULL) FROM ({}) j").format(self._judged()),
                ([r[0] for r in rows],),
            )
        return {"hashed_existing": hashed, "existing_duplicates": repeated}

    def process(self, rows: Sequence[Row]) -> BatchResult:
        ids = [r[0] for r in rows]
        with self.ctx.sink.transaction() as tx:
            if self.bypass_trigger:  # keep updated_at: adding a hash is not an edit of the fact
                tx.write(sql.SQL("SET LOCAL session_replication_role = replica"))
            tx.write(
                sql.SQL("UPDATE {t} SET {c} = j.h FROM ({j}) j WHERE {t}.id = j.id AND j.repeats IS NULL AND {t}.{c} IS NULL").format(
                    t=self.table.ident, c=sql.Identifier(HASH_COLUMN), j=self._judged()
                ),
                (ids,),
            )
            repeats = tx.read(sql.SQL("SELECT id, repeats FROM ({}) j WHERE repeats IS NOT NULL").format(self._judged()), (ids,))
        return BatchResult(failures=[
            Failure(str(i), f"same content as fact {r!r}: left without a content_hash (not deleted); delete one of them if they repeat each other")
            for i, r in repeats
        ])


class UniqueHashIndex(Step):
    """A unique index on `content_hash`, built without blocking the application's writes (an
    index a failed concurrent build left invalid is dropped and built again)."""

    name = "unique_content_hash"

    def __init__(self, ctx: JobContext, table: FactsTable):
        self.ctx, self.table = ctx, table
        self.index_name = f"{table.name.name}_content_hash_key"[:63]

    def _state(self) -> bool | None:
        """True: a valid index exists; False: an invalid one; None: none."""
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                (self.table.name.schema, self.index_name),
            )
            found = cur.fetchone()
        return None if found is None else bool(found[0])

    def tally(self) -> Counters:
        return {"content_hash_index_built": 0 if self._state() else 1}

    def run(self) -> Counters:
        if self._state() is False:
            self.ctx.sink.run_alone(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                sql.Identifier(self.table.name.schema, self.index_name)
            ))
        if not self._state():
            self.ctx.sink.run_alone(sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(self.index_name), self.table.ident, sql.Identifier(HASH_COLUMN)
            ))
        return {}
