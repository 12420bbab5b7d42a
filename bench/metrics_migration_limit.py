"""The limit for the metrics_migration benchmark: one INSERT ... SELECT per table for the whole
source (labels upper-cased, competitors resolved by a join), then the view's refresh. Usage:
python -m bench.metrics_migration_limit (connection from DB_*, source from METRICS_SOURCE_TABLE)."""

from __future__ import annotations

import os
import sys

from bench.common import pg_connect, settings_from_env

VALID = "IN ('POSITIVE', 'NEGATIVE', 'NEUTRAL')"


def main() -> int:
    schema = os.environ["METRICS_SOURCE_TABLE"].split(".")[0]
    with pg_connect(settings_from_env(), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        conn.execute(
            "INSERT INTO metric_facts (collector_result_id, brand_id, customer_id, query_id, collector_type, topic, processed_at)"
            " SELECT collector_result_id, brand_id, customer_id, query_id, collector_type, topic, processed_at"
            " FROM extracted_positions WHERE competitor_name IS NULL"
        )
        conn.execute(
            "INSERT INTO brand_metrics (metric_fact_id, visibility_index, share_of_answers, has_brand_presence, brand_first_position,"
            " brand_positions, total_brand_mentions, total_word_count)"
            " SELECT f.id, e.visibility_index, e.share_of_answers_brand, coalesce(e.has_brand_presence, false), e.brand_first_position,"
            " e.brand_positions, coalesce(e.total_brand_mentions, 0), coalesce(e.total_word_count, 0)"
            " FROM extracted_positions e JOIN metric_facts f USING (collector_result_id) WHERE e.competitor_name IS NULL"
        )
        conn.execute(
            "INSERT INTO brand_sentiment (metric_fact_id, sentiment_label, sentiment_score, positive_sentences, negative_sentences)"
            " SELECT f.id, upper(btrim(e.sentiment_label)), e.sentiment_score, coalesce(e.sentiment_positive_sentences, '[]'),"
            " coalesce(e.sentiment_negative_sentences, '[]') FROM extracted_positions e JOIN metric_facts f USING (collector_result_id)"
            f" WHERE e.competitor_name IS NULL AND upper(btrim(e.sentiment_label)) {VALID}"
        )
        conn.execute(
            "INSERT INTO competitor_metrics (metric_fact_id, competitor_id, visibility_index, share_of_answers, competitor_positions, competitor_mentions)"
            " SELECT f.id, c.id, e.visibility_index_competitor, e.share_of_answers_competitor, e.competitor_positions, coalesce(e.competitor_mentions, 0)"
            " FROM extracted_positions e JOIN metric_facts f USING (collector_result_id)"
            " JOIN brand_competitors c ON c.brand_id = e.brand_id AND c.competitor_name = e.competitor_name"
        )
        conn.execute(
            "INSERT INTO competitor_sentiment (metric_fact_id, competitor_id, sentiment_label, sentiment_score, positive_sentences, negative_sentences)"
            " SELECT f.id, c.id, upper(btrim(e.sentiment_label_competitor)), e.sentiment_score_competitor,"
            " coalesce(e.sentiment_positive_sentences_competitor, '[]'), coalesce(e.sentiment_negative_sentences_competitor, '[]')"
            " FROM extracted_positions e JOIN metric_facts f USING (collector_result_id)"
            " JOIN brand_competitors c ON c.brand_id = e.brand_id AND c.competitor_name = e.competitor_name"
            f" WHERE upper(btrim(e.sentiment_label_competitor)) {VALID}"
        )
        conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY mv_brand_daily_metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
