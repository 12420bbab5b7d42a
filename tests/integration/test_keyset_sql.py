"""The document-id -> key mapping is written twice, in Python (retry path) and in SQL (the
scratch load): Postgres must give exactly the Python answer for every id. And a filtered keyset
walks exactly the rows that match, in key order, resuming from a stored key."""

import uuid

import pytest
from psycopg import sql

from tests.integration.inventory_data import pg_connect, table_parts
from utils.keyset import KeyKind, KeysetQuery

U = uuid.UUID("0b9f3c52-5d3e-4b8e-9c1a-2f4e6d8a0c1b")
IDS = [
    "0", "12", "-12", "007", "-0", "00", "-007", "+5", " 5", "5 ", "5\n", "1e3", "12.0", "", "-", "--1", "1-",
    "1-2", "\u0663", "orphan-1",
    str(2**63 - 1), str(2**63), str(-(2**63)), str(-(2**63) - 1), "9" * 19, "9" * 20,
    str(U), str(U).upper(), U.hex, f"{{{U}}}", f"urn:uuid:{U}", f"{U}\n", "not-a-uuid", "é", "a\"b\\c",
]


@pytest.mark.parametrize("kind", list(KeyKind))
def test_postgres_maps_document_ids_to_keys_as_python_does(worker_env, kind):
    expression = kind.document_key_sql(sql.SQL("doc_id"))
    statement = sql.SQL("SELECT doc_id, {} FROM unnest(%s::text[]) WITH ORDINALITY AS t(doc_id, n) ORDER BY n").format(expression)
    with pg_connect(worker_env) as conn:
        answers = dict(conn.execute(statement, (IDS,)).fetchall())
    assert answers == {doc_id: kind.parse_document_id(doc_id) for doc_id in IDS}
    assert any(key is not None for key in answers.values())


# A filtered keyset: `WHERE (<filter>) AND key > %s ORDER BY key LIMIT %s`.

FILTER_KEYS = {
    "int": [n * 3 for n in range(1, 61)],
    # Unpadded: "row 10" sorts before "row 2", so the order is Postgres's, not Python's numbers'.
    "text": [f"row {n}" for n in range(1, 61)],
}


@pytest.fixture
def embeddings(worker_env):
    """A table of 60 rows whose every third row already has an embedding, and every fifth is
    inactive; keys inserted out of order."""

    def make(key_type: str):
        conn = pg_connect(worker_env)
        table = sql.Identifier(*table_parts(worker_env))
        conn.execute(sql.SQL(
            "CREATE TABLE {} (id {} PRIMARY KEY, embedding real[], is_active boolean NOT NULL, note text)"
        ).format(table, sql.SQL("bigint" if key_type == "int" else "text")))
        keys = FILTER_KEYS[key_type]
        rows = [(k, [1.0] if n % 3 == 0 else None, n % 5 != 0) for n, k in enumerate(keys)]
        with conn.cursor() as cur:
            cur.executemany(sql.SQL("INSERT INTO {} (id, embedding, is_active) VALUES (%s, %s, %s)").format(table), rows[::-1])
        return conn, table

    made = []

    def table_of(key_type: str):
        made.append(make(key_type))
        return made[-1]

    yield table_of
    for conn, _ in made:
        conn.close()


def walk_keys(query: KeysetQuery, conn, limit: int, after=None) -> list:
    seen = []
    while True:
        rows = query.page(conn, after, limit)
        seen.extend(r[0] for r in rows)
        if len(rows) < limit:
            return seen
        after = rows[-1][0]


def matching(conn, table, where: str) -> list:
    return [k for (k,) in conn.execute(sql.SQL("SELECT id FROM {} WHERE {} ORDER BY id").format(table, sql.SQL(where)))]


@pytest.mark.parametrize("key_type", ["int", "text"])
def test_a_filtered_walk_visits_exactly_the_matching_rows_in_order(embeddings, key_type):
    conn, table = embeddings(key_type)
    query = KeysetQuery(table, "id", ("is_active",), filter=sql.SQL("embedding IS NULL"))
    expected = matching(conn, table, "embedding IS NULL")
    assert 0 < len(expected) < 60
    assert walk_keys(query, conn, 7) == expected
    assert walk_keys(query, conn, len(expected)) == expected  # a last page of exactly `limit` rows

    # A filter with parameters: they come before the key's, in statement, page, span and by_keys.
    active = KeysetQuery(table, "id", ("is_active",), filter=sql.SQL("embedding IS NULL AND is_active = %s"), filter_params=(True,))
    both = matching(conn, table, "embedding IS NULL AND is_active")
    assert walk_keys(active, conn, 4) == both
    page = active.page(conn, both[2], 5)
    assert [r[0] for r in page] == both[3:8] and all(r[1] for r in page)
    assert [r[0] for r in active.span(conn, both[2], both[7])] == both[3:8]
    assert [r[0] for r in active.span(conn, None, both[4])] == both[:5]
    everything = matching(conn, table, "true")
    assert [r[0] for r in active.by_keys(conn, everything)] == both, "by_keys gives only the rows that match"
    # statement/params wrapped in a summary statement, as the products phase does.
    summary = sql.SQL("SELECT count(*), max(id) FROM ({}) p").format(active.statement(True))
    assert conn.execute(summary, active.params(both[0], 3)).fetchone() == (3, max(both[1:4]))
    summary = sql.SQL("SELECT count(*) FROM ({}) p").format(active.statement(False))
    assert conn.execute(summary, active.params(None, 1000)).fetchone() == (len(both),)


@pytest.mark.parametrize("key_type", ["int", "text"])
def test_a_filtered_walk_resumes_from_a_key_though_processed_rows_stop_matching(embeddings, key_type):
    conn, table = embeddings(key_type)
    kind = KeyKind.INTEGER if key_type == "int" else KeyKind.TEXT
    query = KeysetQuery(table, "id", (), filter=sql.SQL("embedding IS NULL"))
    expected = matching(conn, table, "embedding IS NULL")
    fill = sql.SQL("UPDATE {} SET embedding = '{{2.0}}' WHERE id = ANY(%s)").format(table)

    # Two batches processed (their rows leave the filter), then the worker stops.
    visited, after = [], None
    for _ in range(2):
        rows = query.page(conn, after, 6)
        visited += [r[0] for r in rows]
        conn.execute(fill, ([r[0] for r in rows],))
        after = rows[-1][0]
    stored = kind.encode(after)
    # Meanwhile a row behind the cursor starts to match (it waits for the next walk), and one
    # ahead of it stops matching (never visited).
    behind = sql.SQL("SELECT id FROM {} WHERE embedding = '{{1.0}}' AND id < %s ORDER BY id").format(table)
    behind = [k for (k,) in conn.execute(behind, (after,))]
    ahead = expected[len(visited) + 2]
    conn.execute(sql.SQL("UPDATE {} SET embedding = NULL WHERE id = %s").format(table), (behind[0],))
    conn.execute(fill, ([ahead],))

    resumed = walk_keys(query, conn, 6, after=kind.decode(stored))
    assert visited == expected[: len(visited)]
    assert resumed == [k for k in expected[len(visited):] if k != ahead], "resumed exactly after the stored key"
    assert not set(visited) & set(resumed)
    assert matching(conn, table, "embedding IS NULL") == [behind[0], *resumed]
