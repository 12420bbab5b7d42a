"""The place_knowledge benchmark's data: the application's tables with existing facts, and a
JSON Lines source that repeats some of them, repeats itself (whitespace and NBSP variants) and
holds a few rows the table refuses. The same seed gives the same data."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from worker import tables

TOPICS = ("history", "architecture", "food", "culture", "people", "nature", "practical", "local_knowledge", "spatial")
FACTS_PER_POI = 20
AREAS = 500


@dataclass(frozen=True)
class Expected:
    """What a correct import of the source leaves: the table's row count, and how the source's
    rows split."""

    rows: int
    new: int
    dup_in_input: int
    dup_existing: int
    failed: int


def existing_text(i: int) -> str:
    return f"Eksisterende fakta nr. {i}: stedet har en historie fra 1700-tallet, med trehus og smale smug (æøå)."


def create(conn: psycopg.Connection, schema: str, facts: int, existing: int) -> None:
    """A fresh schema `schema` with pois, areas and `existing` facts spread over them."""
    pois = max(1, facts // FACTS_PER_POI)
    tables.fresh_schema(conn, schema, "place_knowledge")
    conn.execute("INSERT INTO pois SELECT 'poi-' || i, 'Sted ' || i FROM generate_series(0, %s - 1) i", (pois,))
    conn.execute("INSERT INTO areas SELECT 'area-' || i, 'Område ' || i FROM generate_series(0, %s - 1) i", (AREAS,))
    conn.execute(
        "INSERT INTO place_knowledge (id, poi_id, topic, fact_text, confidence)"
        " SELECT 'e' || i, 'poi-' || (i %% %s), (%s::text[])[i %% 9 + 1],"
        " 'Eksisterende fakta nr. ' || i || ': stedet har en historie fra 1700-tallet, med trehus og smale smug (æøå).',"
        " CASE WHEN i %% 3 = 0 THEN 'verified' ELSE 'unverified' END FROM generate_series(0, %s - 1) i",
        (pois, list(TOPICS), existing),
    )
    conn.execute("RESET search_path")
    conn.execute(sql.SQL("ANALYZE {}.place_knowledge").format(sql.Identifier(schema)))


def write_source(path: Path, facts: int, existing: int, seed: int = 0) -> Expected:
    """`facts` lines, POI by POI (as a research export lists them): 1 in 10 repeats an existing
    fact, 1 in 50 repeats the line before with other whitespace, 1 in 1,000 has a bad topic,
    1 in 20 is an area's."""
    rng = random.Random(seed)
    pois = max(1, facts // FACTS_PER_POI)
    new = dup_in_input = dup_existing = failed = 0
    with path.open("w", encoding="utf-8") as out:
        previous: dict | None = None
        for n in range(facts):
            roll = rng.random()
            if previous is not None and roll < 0.02:
                fact = {**previous, "fact_text": "  " + previous["fact_text"].replace(" ", "\u00a0", 2) + "\t"}
                dup_in_input += 1
            elif roll < 0.12 and dup_existing < existing:
                i = dup_existing * 7919 % existing  # each existing fact at most once (7919 is prime)
                fact = {"poi_id": f"poi-{i % pois}", "topic": TOPICS[i % 9], "fact_text": existing_text(i).replace(" ", "  ", 1)}
                dup_existing += 1
            elif roll < 0.121:
                fact = {"poi_id": f"poi-{n // FACTS_PER_POI % pois}", "topic": "weather", "fact_text": f"Været nr. {n}"}
                failed += 1
            else:
                parent = {"area_id": f"area-{n % AREAS}"} if roll > 0.95 else {"poi_id": f"poi-{n // FACTS_PER_POI % pois}"}
                fact = {**parent, "topic": TOPICS[n % 9], "fact_text": f"Fakta nr. {n} om stedet: {'æøå ' * (n % 4)}bygget i {1600 + n % 400}.",
                        "confidence": "verified" if n % 7 == 0 else "unverified", "source_name": "Bench"}
                new += 1
            out.write(json.dumps(fact, ensure_ascii=False) + "\n")
            previous = fact if "weather" not in fact["topic"] else None
    return Expected(existing + new, new, dup_in_input, dup_existing, failed)
