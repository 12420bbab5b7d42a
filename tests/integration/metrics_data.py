"""What the metrics_migration job wrote, for its tests and benchmark (the source they migrate is
the demo's: worker.demo_metrics.load_example)."""

from __future__ import annotations

import psycopg
from psycopg import sql


def counts(conn: psycopg.Connection) -> tuple[int, ...]:
    """Rows in metric_facts, brand_metrics, competitor_metrics, brand_sentiment, competitor_sentiment."""
    return tuple(
        conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]
        for t in ("metric_facts", "brand_metrics", "competitor_metrics", "brand_sentiment", "competitor_sentiment")
    )
