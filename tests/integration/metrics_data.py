"""Seed 001's tables (tests/schemas/001_metrics.sql) in a schema of their own, and source data
shaped like the seed's example: groups of one brand row and competitor rows."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from utils import pg

SCHEMA_SQL = (Path(__file__).resolve().parents[1] / "schemas" / "001_metrics.sql").read_text()
LABELS = ("positive", "NEGATIVE", "Neutral ")  # the source's labels, in mixed case: upper-cased when migrated


def fresh_schema(conn: psycopg.Connection, schema: str) -> None:
    """`schema` made anew with seed 001's tables, and the connection's search_path set to it."""
    pg.fresh_schema(conn, schema, SCHEMA_SQL)


def load_example(conn: psycopg.Connection, groups: int = 250, competitors: int = 5, brands: int = 5, unlabelled: int = 10) -> None:
    """`groups` collector results, each one brand row and `competitors` competitor rows naming
    the brand's competitors; the last `unlabelled` groups have no sentiment at all. Uses the
    connection's search_path."""
    brand_ids = [uuid.UUID(int=b + 1) for b in range(brands)]
    conn.execute("INSERT INTO brands (id, name) SELECT unnest(%s::uuid[]), 'Brand ' || generate_series(1, %s)", (brand_ids, brands))
    conn.execute(
        "INSERT INTO brand_competitors (brand_id, competitor_name) SELECT b, 'Rival ' || c FROM unnest(%s::uuid[]) b, generate_series(1, %s) c",
        (brand_ids, competitors),
    )
    query = uuid.UUID(int=999)
    conn.execute("INSERT INTO generated_queries (id, text) VALUES (%s, 'best running shoes')", (query,))
    conn.execute("INSERT INTO collector_results SELECT generate_series(1, %s)", (groups,))
    rows = []
    for g in range(1, groups + 1):
        brand, labelled = brand_ids[g % brands], g <= groups - unlabelled
        label = LABELS[g % 3] if labelled else None
        rows.append((g, brand, query, None, 40.5, 12.25, g % 2 == 0 or None, label, 0.5 if labelled else None, None, None, None))
        for c in range(1, competitors + 1):
            clabel = LABELS[(g + c) % 3] if labelled else None
            rows.append((g, brand, query, f"Rival {c}", None, None, None, None, None, 21.0, [c, c + 3], clabel))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO extracted_positions (collector_result_id, brand_id, customer_id, query_id, collector_type, topic, processed_at,"
            " competitor_name, visibility_index, share_of_answers_brand, has_brand_presence, sentiment_label, sentiment_score,"
            " visibility_index_competitor, competitor_positions, sentiment_label_competitor)"
            " VALUES (%s, %s, '00000000-0000-0000-0000-0000000000cc', %s, 'chatgpt', 'shoes', '2026-11-01 12:00+00', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def counts(conn: psycopg.Connection) -> tuple[int, ...]:
    """Rows in metric_facts, brand_metrics, competitor_metrics, brand_sentiment, competitor_sentiment."""
    return tuple(
        conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]
        for t in ("metric_facts", "brand_metrics", "competitor_metrics", "brand_sentiment", "competitor_sentiment")
    )
