"""Seed 000 as a job: `place_knowledge`, on the application's own tables (schemas/000), run as
a real process. Each test has a schema of its own holding `pois`, `areas` and `place_knowledge`
exactly as the seed's application has them."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pymongo
import pytest
from psycopg import sql

from tests.integration.inventory_data import NO_DOTENV, child_env, events, own_schema, pg_connect, run_worker
from tests.integration.kill_compare import assert_interruptions_change_nothing, counters_of
from worker import tables

POI = "google-ChIJtTyDwJkxbUYRSfa9a56pD5o"
SEED_FACTS = [
    {"poi_id": POI, "topic": "history", "fact_text": "Antikvariatet er i en trebygning fra 1700-tallet.",
     "fact_text_en": "Antikvariatet is in a wooden building from the 1700s.", "source_name": "Visit Trondheim",
     "confidence": "verified", "display_ready": True},
    {"poi_id": POI, "topic": "food", "fact_text": "Serverer klassisk norsk mat.",
     "fact_text_en": "Serves classic Norwegian food.", "confidence": "unverified", "display_ready": False},
]


@pytest.fixture
def env(worker_env):
    with own_schema(worker_env, "pk") as (schema, env):
        env.update(PLACE_KNOWLEDGE_TABLE=f"{schema}.place_knowledge", PLACE_KNOWLEDGE_STAGING=f"{schema}.pk_import")
        create_schema(env)
        yield env


def schema_of(env: dict[str, str]) -> str:
    return env["PLACE_KNOWLEDGE_TABLE"].split(".")[0]


def create_schema(env: dict[str, str], pois: int = 3, areas: int = 2) -> None:
    """The application's tables, in the test's schema, with POIs p1.. and areas a1.. (and the seed's POI)."""
    with pg_connect(env) as conn:
        tables.fresh_schema(conn, schema_of(env), "place_knowledge")
        conn.execute("INSERT INTO pois SELECT 'p' || i, 'POI ' || i FROM generate_series(1, %s) i", (pois,))
        conn.execute("INSERT INTO pois VALUES (%s, 'Antikvariatet')", (POI,))
        conn.execute("INSERT INTO areas SELECT 'a' || i, 'Area ' || i FROM generate_series(1, %s) i", (areas,))


def execute(env: dict[str, str], statement: str, *params: Any) -> list[tuple]:
    with pg_connect(env) as conn:
        conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema_of(env))))
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


def facts(env: dict[str, str]) -> list[tuple]:
    return execute(env, "SELECT poi_id, area_id, topic, fact_text, confidence, sort_order, display_ready FROM place_knowledge ORDER BY 1, 2, 3, 4")


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return path


def run(env: dict[str, str], source: Path, *flags: str) -> tuple[dict[str, int], Any]:
    result = run_worker(env, "run", "--job", "place_knowledge", "--source", str(source), *flags)
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    if "--dry-run" in flags:
        [done] = [e for e in events(result.stdout) if e.get("event") == "dry run: nothing was written"]
        return done["would"], result
    status, counters = counters_of(env, ["--job", "place_knowledge", "--source", str(source), *flags])
    assert status == "completed"
    return counters, result


def import_counters(counters: dict[str, int]) -> dict[str, int]:
    return {k: counters.get(k, 0) for k in ("inserted", "dup_in_input", "dup_existing", "failed", "deleted_stale")}


def test_the_seeds_two_facts_are_inserted_once_and_a_second_run_inserts_none(env, tmp_path):
    source = write_jsonl(tmp_path / "facts.jsonl", SEED_FACTS)

    counters, _ = run(env, source)

    assert import_counters(counters) == {"inserted": 2, "dup_in_input": 0, "dup_existing": 0, "failed": 0, "deleted_stale": 0}
    assert facts(env) == [
        (POI, None, "food", "Serverer klassisk norsk mat.", "unverified", 0, False),
        (POI, None, "history", "Antikvariatet er i en trebygning fra 1700-tallet.", "verified", 0, True),
    ]
    [(verified_at,)] = execute(env, "SELECT verified_at FROM place_knowledge WHERE confidence = 'verified'")
    assert verified_at is not None
    again = run_worker(env, "run", "--job", "place_knowledge", "--source", str(source))
    assert any(e.get("event") == "already completed; nothing to do" for e in events(again.stdout))
    assert run_worker(env, "reset", "--job", "place_knowledge", "--source", str(source), "--yes").returncode == 0
    counters, _ = run(env, source)
    assert import_counters(counters) == {"inserted": 0, "dup_in_input": 0, "dup_existing": 2, "failed": 0, "deleted_stale": 0}
    assert len(facts(env)) == 2


def test_facts_differing_only_in_whitespace_are_one_fact_and_case_is_kept(env, tmp_path):
    variants = ["Serverer klassisk norsk mat.", "  Serverer  klassisk norsk mat. ", "Serverer\u00a0klassisk\tnorsk\u00a0\u00a0mat.",
                "Serverer klassisk\u2003norsk mat.\n", "serverer klassisk norsk mat."]
    source = write_jsonl(tmp_path / "facts.jsonl", [{"poi_id": "p1", "topic": "food", "fact_text": t} for t in variants])

    counters, _ = run(env, source)

    assert import_counters(counters) == {"inserted": 2, "dup_in_input": 3, "dup_existing": 0, "failed": 0, "deleted_stale": 0}
    assert [f[3] for f in facts(env)] == ["Serverer klassisk norsk mat.", "serverer klassisk norsk mat."]  # the first as written


def test_facts_already_there_are_hashed_in_place_and_repeats_listed_never_deleted(env, tmp_path):
    execute(env, "INSERT INTO place_knowledge (id, poi_id, topic, fact_text, confidence) VALUES"
                 " ('k1', 'p1', 'history', 'Bygd i 1070.', 'verified'), ('k2', 'p1', 'food', 'Fisk', 'unverified'),"
                 " ('k3', 'p1', 'food', ' Fisk ', 'unverified')")
    execute(env, "INSERT INTO place_knowledge (id, area_id, topic, fact_text) VALUES ('k4', 'a1', 'nature', 'Elva renner forbi.')")
    before = dict(execute(env, "SELECT id, updated_at FROM place_knowledge"))
    source = write_jsonl(tmp_path / "facts.jsonl", [
        {"poi_id": "p1", "topic": "history", "fact_text": "Bygd  i 1070."},  # k1's content
        {"area_id": "a1", "topic": "nature", "fact_text": "Elva renner forbi."},  # k4's
        {"area_id": "a1", "topic": "nature", "fact_text": "Bakklandet ligger ved Nidelva."},
    ])

    counters, _ = run(env, source)

    assert (counters["hashed_existing"], counters["existing_duplicates"]) == (3, 1)
    assert import_counters(counters) == {"inserted": 1, "dup_in_input": 0, "dup_existing": 2, "failed": 0, "deleted_stale": 0}
    hashes = dict(execute(env, "SELECT id, content_hash FROM place_knowledge WHERE id LIKE 'k%'"))
    assert hashes["k3"] is None and None not in (hashes["k1"], hashes["k2"], hashes["k4"])  # k3 repeats k2: kept, unhashed
    assert dict(execute(env, "SELECT id, updated_at FROM place_knowledge WHERE id LIKE 'k%'")) == before  # not "edited"
    listed = run_worker(env, "failures", "--job", "place_knowledge", "--source", str(source)).stdout
    assert "hash_existing\tkey='k3'" in listed and "same content as fact 'k2'" in listed
    assert execute(env, "SELECT indisunique, indisvalid FROM pg_index WHERE indexrelid = 'place_knowledge_content_hash_key'::regclass") == [(True, True)]


def test_every_kind_of_bad_row_is_one_recorded_failure_and_its_neighbours_are_written(env, tmp_path):
    good = {"poi_id": "p2", "topic": "history", "fact_text": "Nidarosdomen ble bygd over St. Olavs grav."}
    source = write_jsonl(tmp_path / "facts.jsonl", [
        {"poi_id": "nope", "topic": "history", "fact_text": "x"},  # 1: unknown POI
        {"area_id": "nowhere", "topic": "history", "fact_text": "x"},  # 2: unknown area
        {"poi_id": "p2", "area_id": "a1", "topic": "history", "fact_text": "x"},  # 3: both parents
        {"topic": "history", "fact_text": "x"},  # 4: neither
        {"poi_id": "p2", "topic": "weather", "fact_text": "x"},  # 5: bad topic
        {"poi_id": "p2", "topic": "history", "fact_text": "x", "confidence": "maybe"},  # 6: bad confidence
        {"poi_id": "p2", "topic": "history", "fact_text": "x", "source_url": "javascript:alert(1)"},  # 7: bad URL
        {"poi_id": "p2", "topic": "history", "fact_text": " \u00a0\t"},  # 8: empty text
        {"poi_id": "p2", "topic": "history"},  # 9: no text
        {"poi_id": "p2", "topic": "history", "fact_text": "x", "sort_order": "first"},  # 10: not an integer
        "{not json",  # 11
        good,  # 12
        {"poi_id": "p2", "fact_text": "x"},  # 13: no topic
    ])

    counters, _ = run(env, source)

    assert import_counters(counters) == {"inserted": 1, "dup_in_input": 0, "dup_existing": 0, "failed": 12, "deleted_stale": 0}
    assert [f[3] for f in facts(env)] == [good["fact_text"]]
    listed = run_worker(env, "failures", "--job", "place_knowledge", "--source", str(source)).stdout.splitlines()
    errors = {int(line.split(": ", 1)[0].rsplit(":", 1)[1]): line.split(": ", 1)[1] for line in (l.split("\t")[-1] for l in listed[:-1])}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
    assert {n: errors[n] for n in errors if n not in (1, 2, 11)} == {
        3: "give exactly one of poi_id and area_id", 4: "give exactly one of poi_id and area_id",
        5: 'violates check constraint "place_knowledge_topic_valid"', 6: 'violates check constraint "place_knowledge_confidence_valid"',
        7: 'violates check constraint "place_knowledge_source_url_safe"', 8: "fact_text is empty", 9: "fact_text is missing",
        10: "sort_order must be an integer, not 'first'", 13: "topic is missing",
    }
    # The tables the foreign keys name, as the catalog spells them (schema-qualified here).
    assert errors[1].startswith("no such poi_id in ") and errors[1].endswith("'nope'")
    assert errors[2].startswith("no such area_id in ") and errors[2].endswith("'nowhere'")
    assert errors[11].startswith("not JSON")


def existing_for_force(env: dict[str, str]) -> None:
    """p1 has a verified fact the source keeps (with other whitespace) and one it dropped; p2
    has a fact and is not in the source."""
    execute(env, "INSERT INTO place_knowledge (id, poi_id, topic, fact_text, confidence) VALUES"
                 " ('keep', 'p1', 'history', 'Bygd i 1070.', 'verified'), ('drop', 'p1', 'food', 'Gammel meny.', 'unverified'),"
                 " ('other', 'p2', 'food', 'Kafe i andre etasje.', 'unverified')")


def force_source(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "force.jsonl", [
        {"poi_id": "p1", "topic": "history", "fact_text": "Bygd i\u00a01070. "},
        {"poi_id": "p1", "topic": "food", "fact_text": "Ny meny med lokal fisk."},
    ])


def test_force_replaces_only_the_sources_parents_and_keeps_a_kept_facts_row(env, tmp_path):
    existing_for_force(env)
    [(kept_verified_at,)] = execute(env, "SELECT verified_at FROM place_knowledge WHERE id = 'keep'")

    counters, _ = run(env, force_source(tmp_path), "--force")

    assert import_counters(counters) == {"inserted": 1, "dup_in_input": 0, "dup_existing": 1, "failed": 0, "deleted_stale": 1}
    rows = {r[0]: r[1:] for r in execute(env, "SELECT id, poi_id, fact_text, verified_at FROM place_knowledge")}
    assert rows["keep"] == ("p1", "Bygd i 1070.", kept_verified_at) and kept_verified_at is not None
    assert "drop" not in rows and rows["other"][:2] == ("p2", "Kafe i andre etasje.")
    assert sorted(r[1] for r in rows.values()) == ["Bygd i 1070.", "Kafe i andre etasje.", "Ny meny med lokal fisk."]


def test_force_dry_run_writes_nothing_and_counts_what_the_real_run_does(env, tmp_path):
    existing_for_force(env)
    before = execute(env, "SELECT * FROM place_knowledge ORDER BY id")
    source = force_source(tmp_path)

    would, _ = run(env, source, "--force", "--dry-run")

    assert execute(env, "SELECT * FROM place_knowledge ORDER BY id") == before
    assert execute(env, "SELECT count(*) FROM information_schema.columns WHERE table_schema = %s AND column_name = 'content_hash'", schema_of(env)) == [(0,)]
    assert execute(env, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", schema_of(env)) == [(3,)]  # no staging, no ledger
    assert run_worker(env, "status", "--job", "place_knowledge", "--json").stdout.startswith("no checkpoint")
    done, _ = run(env, source, "--force")
    assert {k: v for k, v in would.items() if k != "failures"} == {k: v for k, v in done.items() if k != "failures"}
    assert import_counters(done)["deleted_stale"] == 1


def big_source(path: Path, pois: int, per_poi: int, seed: int = 7) -> Path:
    """Facts for p1..p<pois>, some repeated with other whitespace, in a shuffled order."""
    rng = random.Random(seed)
    rows = []
    for p in range(1, pois + 1):
        for i in range(per_poi):
            text = f"Fakta {i} om sted {p}: æøå {'ÆØÅ' * (i % 3)}."
            rows.append({"poi_id": f"p{p}", "topic": rng.choice(["history", "food", "culture"]), "fact_text": text})
            if i % 5 == 0:
                rows.append({**rows[-1], "fact_text": "  " + text.replace(" ", "\u00a0", 1)})
    rng.shuffle(rows)
    return write_jsonl(path, rows)


def test_kills_mid_file_and_mid_force_end_as_an_uninterrupted_run(env, tmp_path):
    # 4,800 lines in batches of 200 (a few tens of batches for the kills to land in), 200 old facts.
    source = big_source(tmp_path / "big.jsonl", pois=100, per_poi=40)

    def prepare(e: dict[str, str]) -> None:
        create_schema(e, pois=100)
        execute(e, "INSERT INTO place_knowledge (id, poi_id, topic, fact_text, confidence)"
                   " SELECT 'old' || i, 'p' || (i % 100 + 1), 'history', 'Gammel fakta ' || i, CASE WHEN i % 2 = 0 THEN 'verified' ELSE 'unverified' END"
                   " FROM generate_series(1, 200) i")
        with pymongo.MongoClient(e["MONGO_URI"]) as client:
            client.drop_database(e["MONGO_DB_NAME"])

    def state(e: dict[str, str]) -> list[tuple]:
        return execute(e, "SELECT CASE WHEN id LIKE 'old%%' THEN id END, poi_id, topic, fact_text, content_hash,"
                          " CASE WHEN id LIKE 'old%%' THEN verified_at END, verified_at IS NOT NULL FROM place_knowledge ORDER BY 2, 3, 4")

    env = {**env, "BATCH_SIZE": "200", "BATCH_SIZE_MAX": "200", "SLEEP_BETWEEN_BATCHES": "0.05"}
    baseline, interrupted = assert_interruptions_change_nothing(
        env, ["--job", "place_knowledge", "--source", str(source), "--force"], prepare=prepare, state=state,
        log_dir=tmp_path / "runs", kills=4,
    )
    assert baseline.counters["inserted"] == 4_000 and baseline.counters["dup_in_input"] == 800
    assert baseline.counters["deleted_stale"] == 200  # the old facts of every POI in the source


def test_a_directory_of_research_files_is_a_source(env, tmp_path):
    research = tmp_path / "research"
    research.mkdir()
    (research / "manifest.json").write_text(json.dumps({"files": 2}))
    (research / "p1.json").write_text(json.dumps({"poi_id": "p1", "facts": [
        {"topic": "history", "fact_text": "Bryggen ble bygd etter brannen i 1702."},
        {"topic": "food", "fact_text": "Fiskemarkedet ligger like ved.", "confidence": "verified"},
    ]}, ensure_ascii=False))
    (research / "a1.json").write_text(json.dumps({"area_id": "a1", "facts": [
        {"topic": "nature", "fact_text": "Området er kjent for sine trehus og smug."},
        {"topic": "spatial", "fact_text": "Ligger øst for Nidelva.", "poi_id": "p1"},  # a fact naming another parent
    ]}, ensure_ascii=False))

    counters, _ = run(env, research)

    assert (counters["files_staged"], counters["rows_staged"]) == (2, 4)
    assert import_counters(counters) == {"inserted": 3, "dup_in_input": 0, "dup_existing": 0, "failed": 1, "deleted_stale": 0}
    assert [(f[0], f[1], f[2]) for f in facts(env)] == [("p1", None, "food"), ("p1", None, "history"), (None, "a1", "nature")]


def test_the_demo_writes_a_source_that_imports_with_every_counter(env, tmp_path):
    out = tmp_path / "demo"
    made = subprocess.run(
        [sys.executable, "-m", "worker.demo_place_knowledge", "--out", str(out), "--pois", "60"],
        cwd=NO_DOTENV, env=child_env(env), capture_output=True, text=True, timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert "60 POIs, 20 areas, 6 facts already in the table" in made.stdout

    counters, _ = run(env, out)

    assert counters["files_staged"] == 80 and counters["rows_staged"] > 300
    c = import_counters(counters)
    assert c["dup_existing"] == 6 and c["dup_in_input"] > 0 and c["inserted"] > 300
    assert c["inserted"] + c["dup_in_input"] + c["dup_existing"] + c["failed"] == counters["rows_staged"]
    assert "æ" in "".join(f[3] for f in facts(env)) or "ø" in "".join(f[3] for f in facts(env))
