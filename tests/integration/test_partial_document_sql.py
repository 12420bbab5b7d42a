"""The products phase sends index documents that Postgres writes by hand (concat, to_json): for
awkward ids and timestamps they must be the JSON documents Python would write."""

import json
from datetime import datetime, timezone

from psycopg import sql

from tests.integration.inventory_data import pg_connect
from worker.jobs.inventory_fields.products_table import _PARTIAL_DOCUMENT

IDS = ['a"b\\c', "line\nbreak", "tab\t", "\x01", "é 漢 😀", "</script>", "", " sp ", "quote'", "{}", "1"]
CREATED = [
    None,
    datetime(2024, 5, 6, 7, 8, 9, 999_999, tzinfo=timezone.utc),
    datetime(1969, 12, 31, 23, 59, 58, 500_000, tzinfo=timezone.utc),  # truncated toward 0, as int()
    datetime(1970, 1, 1, tzinfo=timezone.utc),
]


def test_postgres_writes_the_partial_document_python_would(worker_env):
    rows = [(doc_id, CREATED[n % len(CREATED)], None if n % 2 else n) for n, doc_id in enumerate(IDS)]
    with pg_connect(worker_env) as conn:
        conn.execute("CREATE TEMPORARY TABLE p (id text, created_at timestamptz, deleted_at bigint)")
        with conn.cursor().copy("COPY p FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        rendered = dict(conn.execute(sql.SQL("SELECT id, {} FROM p").format(_PARTIAL_DOCUMENT)).fetchall())

    assert {doc_id: json.loads(text) for doc_id, text in rendered.items()} == {
        doc_id: {"id": doc_id, "created_at": int(created.timestamp()) if created else 0, "deleted_at": deleted or 0}
        for doc_id, created, deleted in rows
    }
