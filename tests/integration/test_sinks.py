"""The sink is the one way a job writes: several statements with RETURNING in one transaction,
COPY, and calls to a paid provider. A dry-run sink answers every write with nothing written and
makes no provider call unless asked to (`--dry-run=calls`)."""

from __future__ import annotations

import pytest
from psycopg import sql

from tests.integration.inventory_data import pg_connect
from utils.pg import Postgres
from worker.cli import read_command_line
from worker.config import load_settings
from worker.sinks import DryRunSink, LiveSink


@pytest.fixture
def table(worker_env):
    name = sql.Identifier("public", "sink_" + worker_env["MONGO_DB_NAME"])
    with pg_connect(worker_env) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, note text)").format(name))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 'kept')").format(name))
    yield name
    with pg_connect(worker_env) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(name))


def rows(env, table) -> list[tuple]:
    with pg_connect(env) as conn:
        return conn.execute(sql.SQL("SELECT id, note FROM {} ORDER BY id").format(table)).fetchall()


def write_batch(sink, table) -> tuple[list[tuple], int, list[tuple]]:
    """One transaction: COPY, an insert that tells inserted from present, a read of its writes."""
    with sink.transaction() as tx:
        copied = tx.copy(sql.SQL("COPY {} (id, note) FROM STDIN").format(table), [(2, "copied"), (3, "copied")])
        inserted = tx.write_returning(
            sql.SQL("INSERT INTO {} VALUES (1, 'again'), (4, 'new') ON CONFLICT (id) DO NOTHING RETURNING id").format(table)
        )
        seen = tx.read(sql.SQL("SELECT id FROM {} ORDER BY id").format(table))
    return inserted, copied, seen


def test_a_live_transaction_copies_inserts_and_counts_what_it_inserted(worker_env, table):
    settings = load_settings(worker_env)
    with Postgres(settings.pg_conninfo()) as pg:
        inserted, copied, seen = write_batch(LiveSink(pg, None), table)
    assert (inserted, copied, seen) == ([(4,)], 2, [(1,), (2,), (3,), (4,)])
    assert rows(worker_env, table) == [(1, "kept"), (2, "copied"), (3, "copied"), (4, "new")]


def test_a_dry_run_transaction_writes_nothing(worker_env, table):
    settings = load_settings(worker_env)
    with Postgres(settings.pg_conninfo(), per_thread=False) as pg:
        inserted, copied, seen = write_batch(DryRunSink(pg, None), table)
    assert (inserted, copied, seen) == ([], 0, [(1,)])
    assert rows(worker_env, table) == [(1, "kept")]


def test_a_provider_is_called_live_and_in_a_dry_run_only_with_calls(worker_env):
    calls: list[str] = []

    def request() -> list[float]:
        calls.append("embed")
        return [0.5]

    settings = load_settings(worker_env)
    with Postgres(settings.pg_conninfo()) as pg:
        fenced: list[str] = []
        assert LiveSink(pg, None, before_write=lambda: fenced.append("lease checked")).call("embeddings", request) == [0.5]
        assert fenced == ["lease checked"]  # a worker that lost its lease spends nothing more
        dry = DryRunSink(pg, None)
        assert dry.call("embeddings", request) is None and dry.call("embeddings", request) is None
        assert dry.skipped_calls == {"embeddings": 2}
        assert DryRunSink(pg, None, calls=True).call("embeddings", request) == [0.5]
    assert calls == ["embed", "embed"]


@pytest.mark.parametrize(
    "argv, dry_run, calls",
    [
        (["run"], False, False),
        (["run", "--dry-run"], True, False),
        (["run", "--dry-run=calls"], True, True),
        (["--dry-run=calls"], True, True),
    ],
)
def test_dry_run_calls_comes_from_the_command_line(worker_env, argv, dry_run, calls):
    inv = read_command_line(argv, worker_env)
    assert (inv.settings.dry_run, inv.settings.dry_run_calls) == (dry_run, calls)
