"""Seed 001's migration as its script runs it, for the benchmark, over local Postgres: group by
group, an exists check, then one INSERT per target row and one lookup per competitor name, each
statement on its own (no transaction across the tables). Usage: python -m
bench.metrics_migration_loop GROUPS (the first GROUPS collector results; connection from DB_*,
source from METRICS_SOURCE_TABLE)."""

from __future__ import annotations

import json
import os
import sys

from bench.common import pg_connect, settings_from_env

LABELS = ("POSITIVE", "NEGATIVE", "NEUTRAL")


def main() -> int:
    schema = os.environ["METRICS_SOURCE_TABLE"].split(".")[0]
    groups = int(sys.argv[1])
    created = dict(facts=0, competitor_metrics=0, skipped=0)
    with pg_connect(settings_from_env(), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        for group in range(1, groups + 1):
            if conn.execute("SELECT 1 FROM metric_facts WHERE collector_result_id = %s", (group,)).fetchone():
                created["skipped"] += 1
                continue
            rows = conn.execute(
                "SELECT brand_id, customer_id, query_id, collector_type, topic, processed_at, competitor_name, visibility_index,"
                " share_of_answers_brand, has_brand_presence, total_brand_mentions, sentiment_label, sentiment_score,"
                " visibility_index_competitor, competitor_positions, competitor_mentions, sentiment_label_competitor"
                " FROM extracted_positions WHERE collector_result_id = %s ORDER BY id", (group,),
            ).fetchall()
            fact = None
            for r in rows:
                if r[6] is None:
                    fact = conn.execute(
                        "INSERT INTO metric_facts (collector_result_id, brand_id, customer_id, query_id, collector_type, topic, processed_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id", (group, *r[:6]),
                    ).fetchone()[0]
                    created["facts"] += 1
                    conn.execute(
                        "INSERT INTO brand_metrics (metric_fact_id, visibility_index, share_of_answers, has_brand_presence, total_brand_mentions)"
                        " VALUES (%s, %s, %s, %s, %s)", (fact, r[7], r[8], bool(r[9]), r[10] or 0),
                    )
                    if r[11] and r[11].strip().upper() in LABELS:
                        conn.execute("INSERT INTO brand_sentiment (metric_fact_id, sentiment_label, sentiment_score) VALUES (%s, %s, %s)",
                                     (fact, r[11].strip().upper(), r[12]))
                elif fact is not None:
                    competitor = conn.execute("SELECT id FROM brand_competitors WHERE brand_id = %s AND competitor_name = %s", (r[0], r[6])).fetchone()
                    if competitor is None:
                        continue
                    conn.execute(
                        "INSERT INTO competitor_metrics (metric_fact_id, competitor_id, visibility_index, competitor_positions, competitor_mentions)"
                        " VALUES (%s, %s, %s, %s, %s)", (fact, competitor[0], r[13], r[14], r[15] or 0),
                    )
                    created["competitor_metrics"] += 1
                    if r[16] and r[16].strip().upper() in LABELS:
                        conn.execute("INSERT INTO competitor_sentiment (metric_fact_id, competitor_id, sentiment_label) VALUES (%s, %s, %s)",
                                     (fact, competitor[0], r[16].strip().upper()))
    print(json.dumps(created))
    return 0


if __name__ == "__main__":
    sys.exit(main())
