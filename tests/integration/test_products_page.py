"""The products phase reads each page summed up by Postgres (a `Page` of `ProductsBatch`): the
summary must say what the page's rows say, a page split to isolate a bad row must read its rows
again without skipping any, and the documents a batch sends carry the rows' values as they stand
when it writes, not as they stood when the page was fetched."""

from __future__ import annotations

import pytest
from psycopg import sql

from tests.integration.inventory_data import (
    DELETED_AT,
    index_documents,
    load,
    make_dataset,
    pg_connect,
    pg_rows,
    products_sql,
    table_parts,
)
from worker.config import load_settings
from worker.jobs.inventory_fields import BackfillProducts, InventoryFieldsJob, ProductsBatch
from worker.resources import Resources
from worker.stop import StopFlag


def _products_phase(resources: Resources, env: dict[str, str]) -> BackfillProducts:
    ctx = resources.job_context(StopFlag(), InventoryFieldsJob.read_settings(env))
    return next(p for p in InventoryFieldsJob(ctx).phases() if isinstance(p, BackfillProducts))


def _selected(env: dict[str, str], batch: ProductsBatch) -> set[str]:
    """The products the batch's condition selects: what its UPDATE and its documents cover."""
    where, params = batch.where()
    with pg_connect(env) as conn:
        table = sql.Identifier(*table_parts(env))
        rows = conn.execute(sql.SQL("SELECT id::text FROM {} WHERE {}").format(table, where), params).fetchall()
    return {key for (key,) in rows}


@pytest.mark.parametrize("key_type", ["int", "uuid", "text"])
def test_a_fetched_page_sums_up_the_rows_it_stands_for(worker_env, key_type):
    data = make_dataset(300, key_type)
    load(worker_env, data)
    ordered = sorted(data.products, key=lambda p: p[0])

    with Resources.open(load_settings(worker_env), InventoryFieldsJob.stores) as resources:
        phase = _products_phase(resources, worker_env)
        after = None
        for _ in range(3):
            page = phase.fetch(after, 120)
            rows = phase.query.page(resources.pg.connection(), after, 120)
            batch = ProductsBatch.of(page)

            assert len(page) == len(rows) > 0
            assert page.last_key == rows[-1][0] == phase.last_key(page)
            assert batch.null_count == ProductsBatch.of(rows).null_count == sum(1 for row in rows if row[1] is None)
            assert _selected(worker_env, batch) == _selected(worker_env, ProductsBatch.of(rows)) == {str(r[0]) for r in rows}
            after = page.last_key
        assert after == ordered[-1][0], "three pages of 120 walk all 300 products"


def test_a_split_page_reads_its_rows_again_with_any_row_added_since(worker_env):
    """A page's rows are read again only when the engine splits it. A row added inside its key
    range since the fetch must be among them: the checkpoint will move past the whole range."""
    data = make_dataset(300, "int")
    load(worker_env, data)
    products_sql(worker_env, "DELETE FROM {t} WHERE id = 50")

    with Resources.open(load_settings(worker_env), InventoryFieldsJob.stores) as resources:
        phase = _products_phase(resources, worker_env)
        page = phase.fetch(None, 100)
        assert (len(page), page.last_key) == (100, 101)
        products_sql(worker_env, "INSERT INTO {t} (id, created_at, deleted_at) VALUES (50, now(), NULL)")
        left, right = page[:50], page[50:]

    keys = [row[0] for row in (*left, *right)]
    assert keys == list(range(1, 102)), "the rows of the range as they are now, the added one included"
    assert ProductsBatch.of(left).keys == [row[0] for row in left]
    assert ProductsBatch.of(left).null_count == sum(1 for row in left if row[1] is None)


def test_a_batch_sends_what_postgres_holds_when_it_writes_not_when_it_fetched(worker_env):
    """The application deletes products after the worker fetched their page: one with NULL
    deleted_at (the worker's UPDATE must skip it) and one already 0. Both documents must say
    deleted, as Postgres does; a row inserted into the page's range meanwhile is written too."""
    data = make_dataset(100, "int")
    load(worker_env, data)
    null_row, zero_row = 2, 3  # make_dataset: even keys NULL, odd keys 0 (but every 11th deleted)
    assert (data.expected_rows()["2"], pg_rows(worker_env)["2"], pg_rows(worker_env)["3"]) == (0, None, 0)

    with Resources.open(load_settings(worker_env), InventoryFieldsJob.stores) as resources:
        phase = _products_phase(resources, worker_env)
        page = phase.fetch(None, 50)
        products_sql(worker_env, "UPDATE {t} SET deleted_at = %s WHERE id IN (%s, %s)", DELETED_AT + 5, null_row, zero_row)
        products_sql(worker_env, "DELETE FROM {t} WHERE id = 4")
        products_sql(worker_env, "INSERT INTO {t} (id, created_at, deleted_at) VALUES (4, now(), NULL)")
        result = phase.process(page)

    rows, docs = pg_rows(worker_env), index_documents(worker_env)
    assert rows["2"] == rows["3"] == DELETED_AT + 5, "the application's deletes stand in Postgres"
    assert docs["2"]["deleted_at"] == docs["3"]["deleted_at"] == DELETED_AT + 5, "and in the index"
    assert rows["4"] == 0 and docs["4"]["deleted_at"] == 0
    assert all(rows[str(k)] is not None for k in range(1, 51))
    assert result.counters["index_docs_updated"] == sum(1 for k in range(1, 51) if k % 13)


def test_a_batch_with_an_infinite_timestamp_writes_nothing(worker_env):
    """The row is found when the documents are rendered, after the UPDATE: the transaction is
    rolled back, so the engine's split finds the NULL rows of the batch still NULL."""
    data = make_dataset(40, "int")
    load(worker_env, data)
    products_sql(worker_env, "UPDATE {t} SET created_at = 'infinity' WHERE id = 7")
    before = pg_rows(worker_env)

    with Resources.open(load_settings(worker_env), InventoryFieldsJob.stores) as resources:
        phase = _products_phase(resources, worker_env)
        with pytest.raises(OverflowError, match="7"):
            phase.process(phase.fetch(None, 40))

    assert pg_rows(worker_env) == before
