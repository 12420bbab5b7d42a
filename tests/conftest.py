"""Shared fixtures: real Postgres, Typesense and MongoDB servers for the whole session.

`services` starts the three servers (tests/servers.py) the first time a test asks for them
and stops them when the session ends, also on Ctrl-C, SIGTERM or an interpreter exit that
skips fixture teardown; a server started here also gets a signal from the kernel if the
pytest process is killed outright. Unit tests that do not ask for `services` start nothing.

`worker_env` is the worker's environment for one test: the servers' connection variables
plus names (Mongo database, Typesense collection, tables) no other test uses.
"""

from __future__ import annotations

import atexit
import signal
import threading
import uuid

import pytest

from tests.servers import TestServices


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
def worker_env(services) -> dict[str, str]:
    u = uuid.uuid4().hex[:8]
    env = services.env()
    env.update(
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
    return env
