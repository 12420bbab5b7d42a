"""Shared fixtures: real Postgres, Typesense and MongoDB servers for the whole session.

`services` starts the three servers (tests/servers.py) the first time a test asks for them
and stops them when the session ends, also on Ctrl-C, SIGTERM or an interpreter exit that
skips fixture teardown; a server started here also gets a signal from the kernel if the
pytest process is killed outright. Unit tests that do not ask for `services` start nothing.

`worker_env` is the worker's environment for one test: the servers' connection variables
plus names (Mongo database, Typesense collection, tables) no other test uses, dropped when the
test ends, so the servers do not pile up every test's data (a Typesense restarted by a fault
test loads all of it again before it accepts writes), and a temporary directory (TMPDIR) of
its own for the workers' lease claims.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import threading
import uuid
from typing import Iterator

import httpx
import psycopg
import pymongo
import pytest
from psycopg import sql

from tests.servers import ModelServer, TestServices


def _raise_keyboard_interrupt(signum, frame):
    # pytest treats KeyboardInterrupt as "interrupted": it still tears fixtures down.
    raise KeyboardInterrupt(f"received signal {signum}")


@pytest.fixture(scope="session")
def services():
    svc = TestServices()
    atexit.register(svc.stop)
    previous = None
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        svc.start()
        yield svc
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        svc.stop()
        atexit.unregister(svc.stop)


@pytest.fixture(scope="session")
def model_server(tmp_path_factory) -> Iterator[ModelServer]:
    """The local embeddings server, started once for the tests that ask for it."""
    server = ModelServer(tmp_path_factory.mktemp("model-server"))
    atexit.register(server.stop)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _restart_stopped_servers(request):
    """A fault test that stopped a server and failed before restarting it must not take the
    server away from every test after it: start it again (same port, same data)."""
    yield
    if "services" not in request.fixturenames:
        return
    svc = request.getfixturevalue("services")
    for server in svc.servers:
        if not server.external and not server.is_running:
            server.start()


@pytest.fixture
def worker_env(services, tmp_path_factory) -> Iterator[dict[str, str]]:
    u = uuid.uuid4().hex[:8]
    env = services.env()
    env.update(
        # The workers' temporary directory, where their lease claims live: the test's own, so a
        # worker of another test, or of another test run on this machine, never holds the claim
        # of a run of the same name (its successor would wait out the lease instead of taking it).
        TMPDIR=str(tmp_path_factory.mktemp("worker-tmp")),
        MONGO_DB_NAME=f"t_{u}",
        TYPESENSE_COLLECTION=f"products_{u}",
        PRODUCTS_TABLE=f"public.products_{u}",
        SCRATCH_TABLE=f"public.scratch_{u}",
        SLEEP_BETWEEN_BATCHES="0",
        LOG_FORMAT="json",
        LEASE_TTL_SECONDS="3",
        RETRY_TIMEOUT_SECONDS="10",
        RETRY_MAX_WAIT_SECONDS="0.5",
    )
    yield env
    _drop_namespace(env)


def _drop_namespace(env: dict[str, str]) -> None:
    """Best effort, each store on its own: a server a fault test left stopped keeps its data."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.delete(
            f"{env.get('TYPESENSE_PROTOCOL', 'http')}://{env['TYPESENSE_HOST']}:{env['TYPESENSE_PORT']}/collections/{env['TYPESENSE_COLLECTION']}",
            headers={"X-TYPESENSE-API-KEY": env["TYPESENSE_API_KEY"]},
            timeout=30,
        )
    with contextlib.suppress(psycopg.Error):
        with psycopg.connect(
            host=env["DB_HOST"], port=env["DB_PORT"], dbname=env["DB_DATABASE"], user=env["DB_USER"],
            password=env["DB_PASSWORD"], autocommit=True, connect_timeout=5,
        ) as conn:
            for table in (env["PRODUCTS_TABLE"], env["SCRATCH_TABLE"]):
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(*table.split("."))))
    with contextlib.suppress(pymongo.errors.PyMongoError):
        with pymongo.MongoClient(env["MONGO_URI"], serverSelectionTimeoutMS=3000) as client:
            client.drop_database(env["MONGO_DB_NAME"])
