"""Seed 003's tables (tests/schemas/003_embeddings.sql: `real[]`, pgvector is not installed
here) in a schema of their own; the seed's state in miniature is the demo's
(worker.demo_embeddings.load_seed_state)."""

from __future__ import annotations

from pathlib import Path

import psycopg

from utils import pg

SCHEMA_SQL = (Path(__file__).resolve().parents[1] / "schemas" / "003_embeddings.sql").read_text()


def fresh_schema(conn: psycopg.Connection, schema: str) -> None:
    pg.fresh_schema(conn, schema, SCHEMA_SQL)
