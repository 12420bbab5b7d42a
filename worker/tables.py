"""The tables each job needs, shipped with the worker as `worker/jobs/<job>/tables.sql`.

Each file defines the application's tables as the job expects to find them (a job creates only
its own staging and scratch tables). They live beside the job's code, so they ship inside the
image (the Dockerfile copies worker/) and a user can create them with `psql -f`; the demos, the
tests and the benchmarks create their tables from the same files, so the definitions cannot
drift from what the jobs are tested on; and an error about a missing table names the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import psycopg
from psycopg import sql

from utils import pg

JOBS_DIR = Path(__file__).resolve().parent / "jobs"
PROJECT_DIR = JOBS_DIR.parents[1]


def path(job: str) -> Path:
    """The job's table definitions (FileNotFoundError on reading, for a job that has none)."""
    return JOBS_DIR / job / "tables.sql"


def definition(job: str) -> str:
    """The SQL that creates the job's tables, in the connection's current schema."""
    return path(job).read_text(encoding="utf-8")


def create(conn: psycopg.Connection, job: str, schema: str, present: str) -> bool:
    """The job's tables created in `schema` (made if missing) unless its table `present` is
    there already (a demo started again); True when created. The search_path is left on
    `schema` (then public), so the caller's statements find the tables."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
    if conn.execute("SELECT to_regclass(%s)", (present,)).fetchone()[0] is not None:
        return False
    conn.execute(definition(job))
    return True


def fresh_schema(conn: psycopg.Connection, schema: str, job: str) -> None:
    """`schema` made anew with the job's tables and the search_path left on it: a test's or a
    benchmark's own copy of the application's tables (see utils.pg.fresh_schema)."""
    pg.fresh_schema(conn, schema, definition(job))


def shown(job: str) -> str:
    """The file as the README and error messages name it: relative to the project (and to /app,
    the image's working directory)."""
    return path(job).relative_to(PROJECT_DIR).as_posix()


def missing_tables(tables: Sequence[str], job: str, needs: str, variable: str | None = None) -> str:
    """The message for tables that do not exist: which job needs them for what, the variable
    that names them, and where their definition is, so that a user who never read the job's
    code knows what to create (or to point the variable at)."""
    them = f"table {tables[0]} does not exist" if len(tables) == 1 else f"tables {', '.join(tables)} do not exist"
    return f"{them}: job {job} needs {needs} ({table_hint(job, variable)})"


def table_hint(job: str, variable: str | None = None) -> str:
    """"VARIABLE; definition: worker/jobs/JOB/tables.sql", for a message about a job's table."""
    return f"{variable}; definition: {shown(job)}" if variable else f"definition: {shown(job)}"
