"""Seed 000's import, as its script does it, for the benchmark: every existing fact's hash
fetched first into a set in memory, then the source read and hashed in Python, and the new facts
inserted in chunks of 100, one INSERT per chunk (a chunk the table refuses is retried row by
row, so one bad row does not lose its chunk). Prints its counters as JSON.

Usage: python -m bench.place_knowledge_seed SOURCE (connection from DB_*; table from
PLACE_KNOWLEDGE_TABLE)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys

import psycopg
from psycopg import sql

from bench.common import pg_connect, settings_from_env

CHUNK = 100
COLUMNS = ("poi_id", "area_id", "topic", "fact_text", "fact_text_en", "source_name", "source_url", "confidence", "display_ready", "sort_order")
_WHITESPACE = re.compile(r"[\s\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+")


def content_hash(poi: str | None, area: str | None, topic: str, text: str) -> str:
    """The seed's computeContentHash: poi|area|topic|text with whitespace runs made one space."""
    return hashlib.sha256("|".join((poi or "", area or "", topic, _WHITESPACE.sub(" ", text).strip())).encode()).hexdigest()


def main() -> int:
    schema, name = os.environ["PLACE_KNOWLEDGE_TABLE"].split(".")
    table = sql.Identifier(schema, name)
    counters = dict(inserted=0, skipped=0, errors=0)
    with pg_connect(settings_from_env(), autocommit=True) as conn:
        seen: set[str] = set()
        with conn.transaction(), conn.cursor(name="existing") as cur:  # the seed's fetch, without its 1,000-row cut-off
            cur.execute(sql.SQL("SELECT poi_id, area_id, topic, fact_text FROM {}").format(table))
            for row in cur:
                seen.add(content_hash(*row))
        insert = sql.SQL("INSERT INTO {} ({}) VALUES ").format(table, sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
        chunk: list[tuple] = []

        def flush() -> None:
            if not chunk:
                return
            values = sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS))) for _ in chunk)
            try:
                conn.execute(insert + values, [v for row in chunk for v in row])
                counters["inserted"] += len(chunk)
            except psycopg.Error:
                for row in chunk:
                    try:
                        conn.execute(insert + sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS))), row)
                        counters["inserted"] += 1
                    except psycopg.Error:
                        counters["errors"] += 1
            chunk.clear()

        with open(sys.argv[1], encoding="utf-8") as source:
            for line in source:
                fact = json.loads(line)
                h = content_hash(fact.get("poi_id"), fact.get("area_id"), fact["topic"], fact["fact_text"])
                if h in seen:
                    counters["skipped"] += 1
                    continue
                seen.add(h)
                chunk.append((
                    fact.get("poi_id"), fact.get("area_id"), fact["topic"], fact["fact_text"], fact.get("fact_text_en"),
                    fact.get("source_name"), fact.get("source_url"), fact.get("confidence") or "unverified",
                    bool(fact.get("display_ready")), int(fact.get("sort_order") or 0),
                ))
                if len(chunk) == CHUNK:
                    flush()
            flush()
    print(json.dumps(counters))
    return 0


if __name__ == "__main__":
    sys.exit(main())
