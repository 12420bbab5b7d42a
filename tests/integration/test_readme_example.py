"""The README's example job, run as written (so the README cannot drift from the engine): the
table it names is created, and the job runs through the real engine to completion."""

from __future__ import annotations

import re
from pathlib import Path

from psycopg import sql

from tests.integration.inventory_data import REPO, pg_connect
from worker.config import load_settings
from worker.engine import Engine, EngineOptions
from worker.resources import Resources
from worker.retry import RetryPolicy
from worker.stop import StopFlag


def readme_example() -> dict:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Writing a job"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(Path("README.md")), "exec"), namespace)
    return namespace


def run(env: dict[str, str], job_class) -> object:
    stop = StopFlag()
    settings = load_settings({k: v for k, v in env.items() if not k.startswith("TYPESENSE_")})
    with Resources.open(settings, job_class.stores) as resources:
        job = job_class(resources.job_context(stop))
        policy = RetryPolicy(timeout_seconds=10, max_wait_seconds=0.5)
        engine = Engine(job, resources.checkpoints, resources.failures, stop, policy, EngineOptions(owner="readme"))
        return engine.run()


def test_the_readme_example_job_runs_as_written(worker_env):
    job_class = readme_example()["MarkDoneJob"]
    table = sql.Identifier("public", "items")
    with pg_connect(worker_env) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, done boolean NOT NULL)").format(table))
        conn.execute(sql.SQL("INSERT INTO {} SELECT i, i % 3 = 0 FROM generate_series(1, 1200) i").format(table))
    try:
        cp = run(worker_env, job_class)
        assert str(cp.status) == "completed"
        assert cp.counters["marked"] == 800 and cp.counters["items_scanned"] == 800
        with pg_connect(worker_env) as conn:
            assert conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE NOT done").format(table)).fetchone()[0] == 0
    finally:
        with pg_connect(worker_env) as conn:
            conn.execute(sql.SQL("DROP TABLE {}").format(table))
