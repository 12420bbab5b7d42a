"""What the demo generators (worker/demo_*.py) share: their configuration, read as the worker
reads its own, and the job's tables, created from its definition (worker.tables), so a demo
writes where the job will look."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg

from utils.pg import Postgres
from worker import tables
from worker.config import Settings, TableName, environment, load_settings
from worker.exceptions import ConfigError
from worker.job import Job


def configure(prog: str, job: type[Job]) -> tuple[Settings, Any]:
    """The global settings and `job`'s, from the environment (and .env). Its required settings
    may be missing: a demo reads only its tables' names. A configuration error is one line and
    exit 2, as the worker's is."""
    try:
        env = environment()
        return load_settings(env), job.read_settings(env, required=False)
    except ConfigError as error:
        print(f"{prog}: config error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


@contextmanager
def job_tables(settings: Settings, job: str, table: TableName) -> Iterator[tuple[psycopg.Connection, bool]]:
    """A transaction on the configured Postgres in which `job`'s tables exist in `table`'s
    schema, the search_path on it: (the connection, True) when they were created now, False
    when `table` was there already (a demo started again)."""
    with Postgres(settings.pg_conninfo()) as pg:
        conn = pg.connection()
        with conn.transaction():
            yield conn, tables.create(conn, job, table.schema, str(table))
