"""The limit for the place_knowledge benchmark: the job's work in the fewest statements the
servers allow. The existing facts hashed and indexed in three statements, the source copied in
as raw lines, then one `INSERT ... SELECT DISTINCT ON (content_hash) ... ON CONFLICT DO NOTHING`
(rows with a topic the table refuses filtered out by name: the limit knows the data). Prints
the rows inserted as JSON.

Usage: python -m bench.place_knowledge_limit SOURCE (connection from DB_*; table from
PLACE_KNOWLEDGE_TABLE)."""

from __future__ import annotations

import json
import os
import sys

from psycopg import sql

from bench.common import pg_connect, settings_from_env
from bench.place_knowledge_data import TOPICS
from worker.jobs.place_knowledge.table import content_hash, hash_of


def main() -> int:
    schema, name = os.environ["PLACE_KNOWLEDGE_TABLE"].split(".")
    table, stage = sql.Identifier(schema, name), sql.Identifier(schema, "limit_stage")
    field = lambda key: sql.SQL("j->>{}").format(sql.Literal(key))  # noqa: E731
    with pg_connect(settings_from_env(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN content_hash text").format(table))
        conn.execute(sql.SQL("UPDATE {t} SET content_hash = {h}").format(t=table, h=hash_of(name)))
        conn.execute(sql.SQL("CREATE UNIQUE INDEX ON {} (content_hash)").format(table))
        conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} (line text)").format(stage))
        with conn.cursor() as cur, open(sys.argv[1], "rb") as source:
            # CSV with quote and delimiter bytes no line holds: each line is one value, verbatim.
            with cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')").format(stage)) as copy:
                while data := source.read(1 << 20):
                    copy.write(data)
        inserted = conn.execute(sql.SQL(
            "INSERT INTO {t} (poi_id, area_id, topic, fact_text, confidence, source_name, content_hash)"
            " SELECT DISTINCT ON (h) poi_id, area_id, topic, fact_text, confidence, source_name, h FROM"
            " (SELECT {p} AS poi_id, {a} AS area_id, {tp} AS topic, {f} AS fact_text, coalesce({c}, 'unverified') AS confidence,"
            "  {s} AS source_name, {h} AS h FROM (SELECT line::jsonb AS j FROM {stage}) x) y"
            " WHERE topic = ANY(%s) ORDER BY h ON CONFLICT (content_hash) DO NOTHING"
        ).format(
            t=table, stage=stage, p=field("poi_id"), a=field("area_id"), tp=field("topic"), f=field("fact_text"),
            c=field("confidence"), s=field("source_name"),
            h=content_hash(field("poi_id"), field("area_id"), field("topic"), field("fact_text")),
        ), (list(TOPICS),)).rowcount
    print(json.dumps({"inserted": inserted}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
