"""The products phase reads each page summed up by Postgres (`ProductsPage`): the summary must
say what the page's rows say, and a page split to isolate a bad row must read its rows again
without skipping any."""

from __future__ import annotations

import pytest
from psycopg import sql

from tests.integration.inventory_data import load, make_dataset, pg_connect, table_parts
from worker.config import load_settings
from worker.jobs.inventory_fields import BackfillProducts, InventoryFieldsJob, ProductsPage
from worker.resources import Resources
from worker.stop import StopFlag


def _products_phase(resources: Resources) -> BackfillProducts:
    return next(p for p in InventoryFieldsJob(resources.job_context(StopFlag())).phases() if isinstance(p, BackfillProducts))


def _keys_matching(env: dict[str, str], keys: str | list) -> set[str]:
    """The products an `id = ANY(keys)` finds: what the phase's UPDATE would touch."""
    with pg_connect(env) as conn:
        table = sql.Identifier(*table_parts(env))
        rows = conn.execute(sql.SQL("SELECT id::text FROM {} WHERE id = ANY(%s)").format(table), (keys,)).fetchall()
    return {key for (key,) in rows}


@pytest.mark.parametrize("key_type", ["int", "uuid", "text"])
def test_a_fetched_page_sums_up_the_rows_it_stands_for(worker_env, key_type):
    data = make_dataset(300, key_type)
    load(worker_env, data)
    ordered = sorted(data.products, key=lambda p: p[0])
    infinite = ordered[170][0]  # in the second page: the first has none
    with pg_connect(worker_env) as conn:
        table = sql.Identifier(*table_parts(worker_env))
        conn.execute(sql.SQL("UPDATE {} SET created_at = 'infinity' WHERE id = %s").format(table), (infinite,))

    with Resources.open(load_settings(worker_env)) as resources:
        phase = _products_phase(resources)
        after = None
        for expected_unusable in (None, infinite, None):
            page = phase.fetch(after, 120)
            rows = phase.query.page(resources.pg.connection(), after, 120)
            from_rows = ProductsPage.of(rows)

            assert len(page) == len(rows) == from_rows.size > 0
            assert page.last_key == from_rows.last_key == rows[-1][0] == phase.last_key(page)
            assert page.null_count == from_rows.null_count == sum(1 for row in rows if row[1] is None)
            assert _keys_matching(worker_env, page.null_keys) == {str(row[0]) for row in rows if row[1] is None}
            assert sorted(page.documents.lines) == sorted(from_rows.documents.lines)
            assert sorted(page.documents.ids) == sorted(str(row[0]) for row in rows)
            assert page.unusable_key == from_rows.unusable_key == expected_unusable
            after = page.last_key
        assert after == ordered[-1][0], "three pages of 120 walk all 300 products"


def test_a_split_page_reads_its_rows_again_with_any_row_added_since(worker_env):
    """A page's rows are read again only when the engine splits it. A row added inside its key
    range since the fetch must be among them: the checkpoint will move past the whole range."""
    data = make_dataset(300, "int")
    load(worker_env, data)
    table = sql.Identifier(*table_parts(worker_env))
    with pg_connect(worker_env) as conn:
        conn.execute(sql.SQL("DELETE FROM {} WHERE id = 50").format(table))

    with Resources.open(load_settings(worker_env)) as resources:
        phase = _products_phase(resources)
        page = phase.fetch(None, 100)
        assert (len(page), page.last_key) == (100, 101)
        with pg_connect(worker_env) as conn:
            conn.execute(sql.SQL("INSERT INTO {} (id, created_at, deleted_at) VALUES (50, now(), NULL)").format(table))
        left, right = page[:50], page[50:]

    keys = [row[0] for row in (*left, *right)]
    assert keys == list(range(1, 102)), "the rows of the range as they are now, the added one included"
    assert ProductsPage.of(left).null_keys == [row[0] for row in left if row[1] is None]
