"""The embeddings job's tables and the seed's state for its demo (and the tests): job postings of which
some are embedded, some pending in the queue, some "completed" there without an embedding (the
seed's silent failures), some in no queue at all, some inactive.

    python -m worker.demo_embeddings --jobs 2000 [--schema public]

The tables are the job's own definitions (worker/jobs/embeddings/tables.sql): the embedding
column is `vector(384)` where pgvector is installed (the compose file's Postgres image has it)
and `real[]` where it is not. Does nothing if the schema already has `jobs`.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg

from utils.pg import Postgres
from worker import tables
from worker.config import environment, load_settings

#: Every job's `updated_at`, fixed, so the job's not changing it can be checked.
UPDATED_AT = datetime(2026, 1, 30, 16, 30, tzinfo=timezone.utc)
WORDS = ("senior", "python", "developer", "barista", "nurse", "warehouse", "remote", "oslo", "bergen", "team", "data", "platform",
         "weekends", "part-time", "kubernetes", "customer", "service", "sales", "driver", "teacher", "kindergarten", "welder")


@dataclass(frozen=True)
class SeedState:
    active: int
    embedded: int  # already had an embedding (queue "completed")
    silent: int  # queue "completed", no embedding
    unqueued: int  # active, no queue row
    inactive: int


def with_pgvector(conn: psycopg.Connection) -> None:
    """pgvector installed where the server has it (the compose file's image does), so that the
    job's tables.sql makes the embedding column a vector; an extension is the database's, so
    it goes in the connection's first schema (public) whatever schema the tables go in."""
    if conn.execute("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')").fetchone()[0]:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def load_seed_state(conn: psycopg.Connection, jobs: int = 200, dimensions: int = 384, seed: int = 0, words: int = 40) -> SeedState:
    """`jobs` postings: every 10th inactive; of the active, every 5th embedded (queue
    completed), every 7th "completed" without an embedding, every 6th in no queue, the rest
    pending. Descriptions of about `words` words (every 13th none)."""
    rng = random.Random(seed)
    # A vector as the column reads it from text: '[...]' for pgvector, '{...}' for an array.
    brackets = "[]" if _column_type(conn).startswith("vector") else "{}"
    rows, queue = [], []
    counts = dict(active=0, embedded=0, silent=0, unqueued=0, inactive=0)
    for i in range(1, jobs + 1):
        active = i % 10 != 0
        title = " ".join(rng.choice(WORDS) for _ in range(3)).title()
        description = None if i % 13 == 0 else " ".join(rng.choice(WORDS) for _ in range(words))
        embedded = active and i % 5 == 0
        values = ",".join(str(round(rng.uniform(-0.1, 0.1), 6)) for _ in range(dimensions))
        vector = f"{brackets[0]}{values}{brackets[1]}" if embedded else None
        rows.append((i, f"hash-{i}", title, f"Company {i % 17}", description, active, "active" if active else "closed", vector, UPDATED_AT))
        counts["active" if active else "inactive"] += 1
        if not active:
            continue
        if embedded:
            counts["embedded"] += 1
            queue.append((i, "completed"))
        elif i % 7 == 0:
            counts["silent"] += 1
            queue.append((i, "completed"))
        elif i % 6 == 0:
            counts["unqueued"] += 1
        else:
            queue.append((i, "pending"))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO jobs (id, job_hash, title, company, description, is_active, status, embedding, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
        cur.executemany("INSERT INTO embedding_queue (job_id, status) VALUES (%s, %s)", queue)
    return SeedState(**counts)


def _column_type(conn: psycopg.Connection) -> str:
    """`jobs.embedding`'s type as SQL writes it: vector(384) or real[]."""
    return conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'jobs'::regclass AND attname = 'embedding'"
    ).fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.demo_embeddings", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--schema", default="public")
    args = parser.parse_args(argv)
    settings = load_settings(environment())
    with Postgres(settings.pg_conninfo()) as pg:
        conn = pg.connection()
        with_pgvector(conn)
        if not tables.create(conn, "embeddings", args.schema, "jobs"):
            print("demo embeddings: jobs already exists; nothing to do")
            return 0
        column = _column_type(conn)
        state = load_seed_state(conn, args.jobs)
    print(f"demo embeddings: {args.jobs} jobs (embedding {column}): {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
