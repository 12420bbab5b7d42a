"""Seed 001's mapping, as SQL over a set of collector results: which rows each of the five
tables gets, what is missing there, and what cannot be migrated.

Every statement starts from `batch(condition)`: the source rows of the chosen collector
results (`src`), each group's brand row (`brand`: `competitor_name IS NULL`; the first by id
should there be two) with whether its brand and query exist, and the competitor rows (`comp`)
with the ids their name matches among the brand's competitors (`matches`: one is resolved,
none is not found, two or more are ambiguous). Labels are upper-cased and trimmed; one outside
POSITIVE/NEGATIVE/NEUTRAL writes no sentiment for its row, and is a failure of that row only.
"""

from __future__ import annotations

from psycopg import sql

from worker.config import TableName

LABELS = ("POSITIVE", "NEGATIVE", "NEUTRAL")
TARGETS = ("metric_facts", "brand_metrics", "competitor_metrics", "brand_sentiment", "competitor_sentiment")
VIEW = "mv_brand_daily_metrics"


def _label(column: str) -> sql.Composable:
    return sql.SQL("upper(btrim({}))").format(sql.Identifier(column))


def _valid(column: str) -> sql.Composable:
    return sql.SQL("{} IN ({})").format(_label(column), sql.SQL(", ").join(map(sql.Literal, LABELS)))


class Mapping:
    def __init__(self, source: TableName):
        self.source = sql.Identifier(source.schema, source.name)
        self.schema = source.schema

    def t(self, name: str) -> sql.Identifier:
        """A table of the migration's (in the source's schema)."""
        return sql.Identifier(self.schema, name)

    def batch(self, condition: sql.Composable) -> sql.Composable:
        """`WITH src, brand, comp` over the source rows meeting `condition` (alias `e`)."""
        return sql.SQL(
            "WITH src AS MATERIALIZED (SELECT * FROM {source} e WHERE {condition}),"
            " brand AS MATERIALIZED (SELECT DISTINCT ON (collector_result_id) src.*,"
            "   EXISTS (SELECT 1 FROM {brands} x WHERE x.id = src.brand_id)"
            "   AND EXISTS (SELECT 1 FROM {queries} q WHERE q.id = src.query_id) AS refs_exist"
            "   FROM src WHERE competitor_name IS NULL ORDER BY collector_result_id, id),"
            # The batch's brands' competitors by name, joined once (brand_competitors has no
            # index on them: a lookup per row would scan it per row).
            " comp AS MATERIALIZED (SELECT src.*, m.matches FROM src LEFT JOIN"
            "   (SELECT brand_id, competitor_name, array_agg(id ORDER BY id) AS matches FROM {competitors}"
            "     WHERE brand_id IN (SELECT brand_id FROM src) GROUP BY brand_id, competitor_name) m"
            "   ON m.brand_id = src.brand_id AND m.competitor_name = src.competitor_name"
            "   WHERE src.competitor_name IS NOT NULL AND collector_result_id IN (SELECT collector_result_id FROM brand WHERE refs_exist)) "
        ).format(
            source=self.source, condition=condition, brands=self.t("brands"), queries=self.t("generated_queries"),
            competitors=self.t("brand_competitors"),
        )

    # -- what each table is missing (the same anti-joins count before a write and verify after)

    def missing(self) -> dict[str, sql.Composable]:
        """Per table, a query (after `batch`) of the collector result of each row it lacks."""
        resolved = sql.SQL("cardinality(comp.matches) = 1")
        # Through the tables' own indexes (facts by collector result, rows by fact), never a CTE.
        lacks = lambda table, on: sql.SQL("NOT EXISTS (SELECT 1 FROM {} fact JOIN {} x ON x.metric_fact_id = fact.id WHERE {})").format(  # noqa: E731
            self.t("metric_facts"), self.t(table), on
        )
        by_brand = sql.SQL("fact.collector_result_id = brand.collector_result_id")
        by_comp = sql.SQL("fact.collector_result_id = comp.collector_result_id AND x.competitor_id = comp.matches[1]")
        return {
            "metric_facts": sql.SQL(
                "SELECT collector_result_id FROM brand WHERE refs_exist AND NOT EXISTS (SELECT 1 FROM {} fact WHERE fact.collector_result_id = brand.collector_result_id)"
            ).format(self.t("metric_facts")),
            "brand_metrics": sql.SQL("SELECT collector_result_id FROM brand WHERE refs_exist AND {}").format(lacks("brand_metrics", by_brand)),
            "brand_sentiment": sql.SQL("SELECT collector_result_id FROM brand WHERE refs_exist AND {} AND {}").format(
                _valid("sentiment_label"), lacks("brand_sentiment", by_brand)
            ),
            "competitor_metrics": sql.SQL(
                "SELECT DISTINCT collector_result_id, matches[1] FROM comp WHERE {} AND {}"
            ).format(resolved, lacks("competitor_metrics", by_comp)),
            "competitor_sentiment": sql.SQL(
                "SELECT DISTINCT collector_result_id, matches[1] FROM comp WHERE {} AND {} AND {}"
            ).format(resolved, _valid("sentiment_label_competitor"), lacks("competitor_sentiment", by_comp)),
        }

    def tally(self, condition: sql.Composable) -> sql.Composable:
        """One row: rows each table lacks, and the groups already begun (a fact) yet incomplete
        (every group without its fact also lacks its brand metrics, so begun = the groups lacking
        anything but a fact, minus those lacking the fact)."""
        missing = self.missing()
        need = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {} AS t, collector_result_id FROM ({}) m").format(sql.Literal(t), missing[t]) for t in TARGETS
        )
        counts = sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE t = {})").format(sql.Literal(t)) for t in TARGETS)
        return self.batch(condition) + sql.SQL(
            ", need AS ({}) SELECT {}, count(DISTINCT collector_result_id) FILTER (WHERE t <> 'metric_facts')"
            " - count(DISTINCT collector_result_id) FILTER (WHERE t = 'metric_facts') FROM need"
        ).format(need, counts)

    # -- the writes: two statements, facts first --------------------------------------------

    def writes(self, condition: sql.Composable) -> list[sql.Composable]:
        """The facts, then the four tables hanging on them in one statement, each joined to its
        fact through metric_facts' unique index (never a CTE join: the planner, misjudging a
        CTE's size, would nest two of them)."""
        t = self.t
        fact = sql.SQL("JOIN {} f ON f.collector_result_id = {}.collector_result_id").format
        resolved = sql.SQL("cardinality(comp.matches) = 1")
        facts = self.batch(condition) + sql.SQL(
            "INSERT INTO {} (collector_result_id, brand_id, customer_id, query_id, collector_type, topic, processed_at)"
            " SELECT collector_result_id, brand_id, customer_id, query_id, collector_type, topic, processed_at FROM brand"
            " WHERE refs_exist ON CONFLICT (collector_result_id) DO NOTHING"
        ).format(t("metric_facts"))
        rest = self.batch(condition) + sql.SQL(
            ", bm AS (INSERT INTO {bm} (metric_fact_id, visibility_index, share_of_answers, has_brand_presence, brand_first_position,"
            "   brand_positions, total_brand_mentions, total_word_count)"
            "   SELECT f.id, visibility_index, share_of_answers_brand, coalesce(has_brand_presence, false), brand_first_position,"
            "   brand_positions, coalesce(total_brand_mentions, 0), coalesce(total_word_count, 0) FROM brand {brand_fact}"
            "   ON CONFLICT (metric_fact_id) DO NOTHING),"
            " bs AS (INSERT INTO {bs} (metric_fact_id, sentiment_label, sentiment_score, positive_sentences, negative_sentences)"
            "   SELECT f.id, {brand_label}, sentiment_score, coalesce(sentiment_positive_sentences, '[]'),"
            "   coalesce(sentiment_negative_sentences, '[]') FROM brand {brand_fact} WHERE {brand_valid}"
            "   ON CONFLICT (metric_fact_id) DO NOTHING),"
            " cm AS (INSERT INTO {cm} (metric_fact_id, competitor_id, visibility_index, share_of_answers, competitor_positions, competitor_mentions)"
            "   SELECT DISTINCT ON (f.id, matches[1]) f.id, matches[1], visibility_index_competitor, share_of_answers_competitor,"
            "   competitor_positions, coalesce(competitor_mentions, 0) FROM comp {comp_fact} WHERE {resolved}"
            "   ORDER BY f.id, matches[1], comp.id ON CONFLICT (metric_fact_id, competitor_id) DO NOTHING)"
            " INSERT INTO {cs} (metric_fact_id, competitor_id, sentiment_label, sentiment_score, positive_sentences, negative_sentences)"
            " SELECT DISTINCT ON (f.id, matches[1]) f.id, matches[1], {comp_label}, sentiment_score_competitor,"
            " coalesce(sentiment_positive_sentences_competitor, '[]'), coalesce(sentiment_negative_sentences_competitor, '[]')"
            " FROM comp {comp_fact} WHERE {resolved} AND {comp_valid}"
            " ORDER BY f.id, matches[1], comp.id ON CONFLICT (metric_fact_id, competitor_id) DO NOTHING"
        ).format(
            bm=t("brand_metrics"), bs=t("brand_sentiment"), cm=t("competitor_metrics"), cs=t("competitor_sentiment"),
            brand_fact=fact(t("metric_facts"), sql.SQL("brand")), comp_fact=fact(t("metric_facts"), sql.SQL("comp")),
            brand_label=_label("sentiment_label"), brand_valid=_valid("sentiment_label"), resolved=resolved,
            comp_label=_label("sentiment_label_competitor"), comp_valid=_valid("sentiment_label_competitor"),
        )
        return [facts, rest]

    def failures(self, condition: sql.Composable) -> sql.Composable:
        """(source row id, why) for each row or group that cannot be migrated whole."""
        return self.batch(condition) + sql.SQL(
            "SELECT min(id), 'brand_row_missing: collector result ' || collector_result_id || ' has no brand row'"
            "   || ' (competitor_name NULL): nothing of it was written' FROM src"
            "   WHERE collector_result_id NOT IN (SELECT collector_result_id FROM brand) GROUP BY collector_result_id"
            " UNION ALL SELECT id, 'fact_refused: collector result ' || collector_result_id || ': brand ' || brand_id"
            "   || ' or query ' || query_id || ' does not exist: nothing of it was written' FROM brand WHERE NOT refs_exist"
            " UNION ALL SELECT id, CASE WHEN matches IS NULL THEN 'competitor_not_found: '"
            "   ELSE 'competitor_ambiguous: ' || cardinality(matches) || ' competitors named ' END"
            "   || quote_literal(competitor_name) || ' for brand ' || brand_id || ' (collector result ' || collector_result_id || ')'"
            "   FROM comp WHERE matches IS NULL OR cardinality(matches) > 1"
            " UNION ALL SELECT id, 'sentiment_label_invalid: ' || quote_literal(sentiment_label) || ' (collector result '"
            "   || collector_result_id || '): its sentiment was not written' FROM brand"
            "   WHERE refs_exist AND sentiment_label IS NOT NULL AND NOT {brand_valid}"
            " UNION ALL SELECT id, 'sentiment_label_invalid: ' || quote_literal(sentiment_label_competitor) || ' (collector result '"
            "   || collector_result_id || '): its sentiment was not written' FROM comp"
            "   WHERE cardinality(matches) = 1 AND sentiment_label_competitor IS NOT NULL AND NOT {comp_valid}"
            " ORDER BY 1"
        ).format(brand_valid=_valid("sentiment_label"), comp_valid=_valid("sentiment_label_competitor"))
