"""Seed 003's tables (tests/schemas/003_embeddings.sql) in a schema of their own, holding the
seed's state in miniature: some jobs embedded, some pending in the queue, some "completed"
there without an embedding, some in no queue at all, some inactive."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from utils import pg

SCHEMA_SQL = (Path(__file__).resolve().parents[1] / "schemas" / "003_embeddings.sql").read_text()
#: Every job's `updated_at`, fixed: a test compares the columns the job must not change.
UPDATED_AT = datetime(2026, 1, 30, 16, 30, tzinfo=timezone.utc)
WORDS = ("senior", "python", "developer", "barista", "nurse", "warehouse", "remote", "oslo", "bergen", "team", "data", "platform",
         "weekends", "part-time", "kubernetes", "customer", "service", "sales", "driver", "teacher", "kindergarten", "welder")


def fresh_schema(conn: psycopg.Connection, schema: str) -> None:
    pg.fresh_schema(conn, schema, SCHEMA_SQL)


@dataclass(frozen=True)
class SeedState:
    active: int
    embedded: int  # already had an embedding (queue "completed")
    silent: int  # queue "completed", no embedding
    unqueued: int  # active, no queue row
    inactive: int


def load_seed_state(conn: psycopg.Connection, jobs: int = 200, dimensions: int = 384, seed: int = 0, words: int = 40) -> SeedState:
    """`jobs` postings: every 10th inactive; of the active, every 5th embedded (queue
    completed), every 7th "completed" without an embedding, every 6th in no queue, the rest
    pending. Texts of about `words` words."""
    rng = random.Random(seed)
    rows, queue = [], []
    counts = dict(active=0, embedded=0, silent=0, unqueued=0, inactive=0)
    for i in range(1, jobs + 1):
        active = i % 10 != 0
        title = " ".join(rng.choice(WORDS) for _ in range(3)).title()
        description = None if i % 13 == 0 else " ".join(rng.choice(WORDS) for _ in range(words))
        embedded = active and i % 5 == 0
        vector = [round(rng.uniform(-0.1, 0.1), 6) for _ in range(dimensions)] if embedded else None
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
