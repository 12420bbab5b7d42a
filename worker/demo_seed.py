"""Demo and benchmark data: a products table and a Typesense collection in the state seed 004 describes.

The backfill exists because production data is messy: `deleted_at` is NULL on about half the
rows, some rows lack `created_at`, a few products never reached the index and the index holds
documents whose rows are gone. This recreates that mess, deterministically from `--seed`, so
`docker compose up` demonstrates the whole job and a benchmark measures it on realistic data.
The collection deliberately has only `name`: adding `created_at`/`deleted_at` is the worker's job.

Run: ``python -m worker.demo_seed --rows N [--key-type int|uuid|text] [--seed S] [--drop]``
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import psycopg
import typesense
from psycopg import sql

from utils.pg import Postgres
from utils.typesense import EncodedDocuments, ObjectNotFound, TypesenseIndex
from worker import tables
from worker.config import Settings, TableName
from worker.demo import configure
from worker.jobs.inventory_fields import InventoryFieldsJob

KEY_TYPES = {"int": "bigint", "uuid": "uuid", "text": "text"}
CHUNK = 10_000  # documents per import: fast, yet a bad document is reported early
P_NULL_CREATED, P_NULL_DELETED, P_DELETED, P_MISSING, P_INDEX_ONLY = 0.02, 0.50, 0.03, 0.03, 0.03
_EPOCH = datetime(2018, 1, 1, tzinfo=timezone.utc)
_SPAN, _YEAR = 7 * 365 * 86_400, 365 * 86_400  # created_at falls in 2018..2024
_ADJECTIVES = ("Red", "Steel", "Compact", "Cordless", "Vintage", "Heavy", "Smart", "Mini")
_NOUNS = ("Drill", "Lamp", "Kettle", "Router", "Saw", "Printer", "Mixer", "Heater", "Pump")
Docs = list[dict[str, str]]


class AlreadySeeded(Exception):
    """Table and collection both exist: nothing to do, so a re-run `seed` service succeeds."""


class SeedError(Exception):
    """The seed could not complete (failed documents, or a half-made demo from an earlier run)."""


@dataclass(frozen=True)
class DemoSummary:
    """Exact counts of each group, so tests can assert what the worker did to every one."""

    products: int
    null_deleted_at: int
    deleted: int
    null_created_at: int
    missing_in_index: int
    index_only: int

    @property
    def documents(self) -> int:
        return self.products - self.missing_in_index + self.index_only


def seed_demo(
    settings: Settings, products_table: TableName, rows: int, key_type: str = "int", seed: int = 0, drop: bool = False
) -> DemoSummary:
    """Create PRODUCTS_TABLE and TYPESENSE_COLLECTION with `rows` products (see module doc).

    Raises AlreadySeeded when both exist, SeedError when only one does (unless `drop`): a
    half-made demo would otherwise make the worker fail later with a far less obvious error.
    """
    if key_type not in KEY_TYPES or rows < 1:
        raise ValueError(f"need rows >= 1 and key_type in {sorted(KEY_TYPES)}")
    s, pt = settings, products_table
    index = TypesenseIndex(s.typesense_host, s.typesense_port, s.typesense_protocol,
                           s.typesense_api_key, s.typesense_collection, s.typesense_timeout_seconds)
    admin = typesense.Client({  # TypesenseIndex has no create/drop: the worker never needs them
        "nodes": [{"host": s.typesense_host, "port": s.typesense_port, "protocol": s.typesense_protocol}],
        "api_key": s.typesense_api_key,
        "connection_timeout_seconds": s.typesense_timeout_seconds,
        "num_retries": 0,
    })
    collection = admin.collections[index.collection]
    table = sql.Identifier(pt.schema, pt.name)
    with Postgres(s.pg_conninfo()) as pg:
        conn = pg.connection()
        try:
            # Explicit transaction blocks: correct whether or not the adapter runs autocommit.
            with conn.transaction():
                has_table = conn.execute(
                    "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relname = %s", (pt.schema, pt.name),
                ).fetchone() is not None
            has_collection = _collection_exists(index)
            if (has_table or has_collection) and not drop:
                if has_table and has_collection:
                    raise AlreadySeeded(f"{pt} and collection {index.collection!r} already exist")
                made = pt if has_table else f"collection {index.collection!r}"
                raise SeedError(f"only {made} exists (an interrupted seed?); re-run with --drop")
            if drop:
                with conn.transaction():
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
                if has_collection:
                    collection.delete()
            # The table is made in one transaction and the collection is dropped on failure, so
            # an interrupted run leaves nothing that a re-run would take for "already seeded".
            admin.collections.create({"name": index.collection, "fields": [{"name": "name", "type": "string"}]})
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(pt.schema)))
                    create_products(conn, table, key_type)
                    summary = _load(conn, index, table, rows, key_type, random.Random(seed))
                    # Fresh statistics, so the first benchmark run is not planned blind.
                    conn.execute(sql.SQL("ANALYZE {}").format(table))
                return summary
            except BaseException:
                try:
                    collection.delete()
                except Exception:  # best effort: the original error is the one worth reporting
                    pass
                raise
        finally:
            index.close()


def create_products(conn: psycopg.Connection[Any], table: sql.Identifier, key_type: str = "int") -> None:
    """`table` made as the job's products table (worker/jobs/inventory_fields/tables.sql), with
    an id of `key_type`: the definition's bigint, or uuid or text, which the job takes too. The
    definition names its table `products`, so it is made in this session's temporary schema,
    which no other session sees, and `table` is made LIKE it: any name, in any schema, and
    many at once (the tests make one per test, side by side in public)."""
    with conn.transaction():
        [(search_path,)] = conn.execute("SELECT current_setting('search_path')").fetchall()
        conn.execute("SET LOCAL search_path TO pg_temp")
        conn.execute(tables.definition("inventory_fields"))
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE pg_temp.products INCLUDING ALL)").format(table))
        conn.execute("DROP TABLE pg_temp.products")
        conn.execute("SELECT set_config('search_path', %s, true)", (search_path,))
        if key_type != "int":
            kind = sql.SQL(KEY_TYPES[key_type])
            conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN id TYPE {} USING id::text::{}").format(table, kind, kind))


def _load(conn: psycopg.Connection[Any], index: TypesenseIndex, table: sql.Identifier, rows: int,
          key_type: str, rng: random.Random) -> DemoSummary:
    """COPY the products and import their documents chunk by chunk, in one pass (flat memory)."""
    null_deleted = deleted = null_created = missing = last = 0
    docs: Docs = []
    copy_sql = sql.SQL("COPY {} (id, name, created_at, deleted_at) FROM STDIN").format(table)
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for key, last in _keys(rng, rows, key_type):
            name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {last}"
            offset = rng.randrange(_SPAN)
            created = None if rng.random() < P_NULL_CREATED else _EPOCH + timedelta(seconds=offset)
            r = rng.random()
            deleted_at: int | None = 0
            if r < P_NULL_DELETED:
                deleted_at = None
            elif r < P_NULL_DELETED + P_DELETED:  # soft-deleted some time after creation
                deleted_at = int(_EPOCH.timestamp()) + offset + rng.randrange(1, _YEAR)
            null_created += created is None
            null_deleted += deleted_at is None
            deleted += bool(deleted_at)
            copy.write_row((key, name, created, deleted_at))
            if rng.random() < P_MISSING:
                missing += 1
            else:
                docs = _add(index, docs, {"id": str(key), "name": name})
    orphans = round(rows * P_INDEX_ONLY)
    for n in range(1, orphans + 1):
        if key_type == "int":
            orphan = str(last + n)  # above every real id, so it cannot match a row
        elif key_type == "uuid":
            orphan = str(uuid.UUID(int=rng.getrandbits(128), version=4))  # collision odds ~2^-122
        else:
            orphan = f"orphan-{n}"
        docs = _add(index, docs, {"id": orphan, "name": f"Discontinued item {n}"})
    _import(index, docs)
    return DemoSummary(rows, null_deleted, deleted, null_created, missing, orphans)


def _keys(rng: random.Random, rows: int, key_type: str) -> Iterator[tuple[object, int]]:
    """(pg key, running number). Numbers have gaps, like a table with hard deletes; text keys are
    unpadded so their sort order differs from the numeric one (catches Python-side ordering)."""
    n = 0
    for _ in range(rows):
        n += 1 + int(rng.random() * 3)
        if key_type == "int":
            yield n, n
        elif key_type == "uuid":
            yield uuid.UUID(int=rng.getrandbits(128), version=4), n
        else:
            yield f"sku-{n}", n


def _add(index: TypesenseIndex, docs: Docs, doc: dict[str, str]) -> Docs:
    docs.append(doc)
    if len(docs) < CHUNK:
        return docs
    _import(index, docs)
    return []


def _import(index: TypesenseIndex, docs: Docs) -> None:
    """Import and check every line: Typesense answers HTTP 200 even when documents fail."""
    failed = index.import_documents(EncodedDocuments.from_dicts(docs), "create").failed
    if failed:
        sample = "; ".join(f"{r.id}: {r.error}" for r in failed[:3])
        raise SeedError(f"{len(failed)} of {len(docs)} documents failed to import ({sample})")


def _collection_exists(index: TypesenseIndex) -> bool:
    try:
        index.schema()
    except ObjectNotFound:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.demo_seed", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, required=True, help="number of products (>= 1)")
    parser.add_argument("--key-type", choices=sorted(KEY_TYPES), default="int", help="type of products.id")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same data")
    parser.add_argument("--drop", action="store_true", help="drop and recreate an existing table/collection")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be >= 1")
    settings, job_settings = configure("demo_seed", InventoryFieldsJob)
    products_table = job_settings.products_table
    # `docker compose down` sends SIGTERM: unwind through the cleanup instead of dying mid-COPY.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    try:
        s = seed_demo(settings, products_table, args.rows, args.key_type, args.seed, args.drop)
    except AlreadySeeded as exc:
        print(f"demo_seed: already seeded: {exc}; nothing to do (--drop recreates them)")
        return 0
    except SeedError as exc:
        print(f"demo_seed: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo_seed: interrupted; nothing half-made was left behind", file=sys.stderr)
        return 130
    print(f"demo_seed: {products_table}: {s.products} products ({s.null_deleted_at} deleted_at NULL,"
          f" {s.deleted} deleted, {s.null_created_at} created_at NULL); {settings.typesense_collection!r}:"
          f" {s.documents} documents ({s.missing_in_index} products missing, {s.index_only} index-only);"
          f" {args.key_type} keys, seed {args.seed}, {time.monotonic() - started:.1f}s")
    if args.drop:  # a checkpoint from the old data would make the worker report "already completed"
        print("demo_seed: if the worker ran on the old data: python -m worker reset --job JOB --yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
