"""Demo data for the metrics_migration job: its tables and a source to migrate.

    python -m worker.demo_metrics [--groups 250]

Creates the job's tables (worker/jobs/metrics_migration/tables.sql) in METRICS_SOURCE_TABLE's
schema and fills the source as the application's collectors left it: per collector result, the
brand's own row and one row per competitor, the labels in mixed case (the job upper-cases them),
the last few results without any sentiment. Does nothing when the source table exists already,
so a demo started again keeps what the job did. The tests and the benchmark build their data with
`load_example` too.
"""

from __future__ import annotations

import argparse
import sys
import uuid

import psycopg

from worker.demo import configure, job_tables
from worker.jobs.metrics_migration import MetricsMigrationJob

LABELS = ("positive", "NEGATIVE", "Neutral ")  # the source's labels, in mixed case: upper-cased when migrated


def load_example(conn: psycopg.Connection, groups: int = 250, competitors: int = 5, brands: int = 5, unlabelled: int = 10) -> int:
    """`groups` collector results, each one brand row and `competitors` competitor rows naming
    the brand's competitors; the last `unlabelled` groups have no sentiment at all. Uses the
    connection's search_path; returns the source rows written."""
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
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.demo_metrics", description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=250, help="collector results in the source (default 250)")
    args = parser.parse_args(argv)
    settings, job_settings = configure("demo_metrics", MetricsMigrationJob)
    source = job_settings.source
    with job_tables(settings, "metrics_migration", source) as (conn, created):
        rows = load_example(conn, args.groups) if created else 0
    if not created:
        print(f"demo_metrics: {source} already exists; nothing to do")
        return 0
    print(f"demo_metrics: {source}: {rows} rows of {args.groups} collector results; migrate them with:"
          " python -m worker run --job metrics_migration")
    return 0


if __name__ == "__main__":
    sys.exit(main())
