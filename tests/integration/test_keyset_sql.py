"""The document-id -> key mapping is written twice, in Python (retry path) and in SQL (the
scratch load): Postgres must give exactly the Python answer for every id."""

import uuid

import pytest
from psycopg import sql

from tests.integration.inventory_data import pg_connect
from utils.keyset import KeyKind

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
