"""The test harness itself: real servers that start, answer, keep data across restarts."""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest

from tests.servers import ExternalServer, TestServices

WORKER_VARIABLES = {
    "DB_HOST", "DB_PORT", "DB_DATABASE", "DB_USER", "DB_PASSWORD", "DB_SSLMODE",
    "MONGO_URI", "TYPESENSE_HOST", "TYPESENSE_PORT", "TYPESENSE_PROTOCOL", "TYPESENSE_API_KEY",
}


def _managed(server) -> None:
    if server.external:
        pytest.skip(f"{server.name} is provided externally; the harness cannot restart it")


def _fails(conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# -- environment ------------------------------------------------------------------------------


def test_env_names_every_worker_variable(services):
    env = services.env()
    assert set(env) == WORKER_VARIABLES
    assert all(isinstance(v, str) and v for v in env.values())
    assert env["DB_SSLMODE"] == "disable"
    assert env["TYPESENSE_PROTOCOL"] == "http"
    assert env["DB_DATABASE"] == "backfill_test"


def test_worker_env_is_fresh_per_test(worker_env, services):
    assert WORKER_VARIABLES <= set(worker_env)
    u = worker_env["MONGO_DB_NAME"].removeprefix("t_")
    assert len(u) == 8
    assert worker_env["TYPESENSE_COLLECTION"] == f"products_{u}"
    assert worker_env["PRODUCTS_TABLE"] == f"public.products_{u}"
    assert worker_env["SCRATCH_TABLE"] == f"public.scratch_{u}"
    assert worker_env["LOG_FORMAT"] == "json"
    worker_env["DB_PASSWORD"] = "changed"
    assert services.env()["DB_PASSWORD"] != "changed"


# -- Postgres ---------------------------------------------------------------------------------


def test_postgres_requires_the_password(services):
    pg = services.postgres
    with pg.connect() as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == (
            pg.database,
            pg.user,
        )
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**pg.conninfo(password=pg.password + "x"))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**pg.conninfo(password=""))
    if not pg.external:
        # A rejected login is logged, the password is not.
        assert "password authentication failed" in pg.log_path.read_text()
        for path in pg.base_dir.glob("*.log"):
            assert pg.password not in path.read_text()


def test_postgres_restart_keeps_data_and_port(services):
    pg = services.postgres
    _managed(pg)
    table = _name("harness")
    with pg.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'one'), (2, 'two')")
    port, pid = pg.port, pg.pid

    pg.restart()

    assert pg.is_running and pg.port == port and pg.pid != pid
    with pg.connect() as conn:
        rows = conn.execute(f"SELECT id, name FROM {table} ORDER BY id").fetchall()
        conn.execute(f"DROP TABLE {table}")
    assert rows == [(1, "one"), (2, "two")]


def test_postgres_survives_a_crash_and_drops_connections_on_stop(services):
    pg = services.postgres
    _managed(pg)
    table = _name("crash")
    conn = pg.connect(autocommit=True)
    conn.execute(f"CREATE TABLE {table} (id int)")
    conn.execute(f"INSERT INTO {table} VALUES (42)")

    pg.kill()  # SIGKILL, no shutdown checkpoint: recovery replays the WAL
    assert not pg.is_running
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    pg.start()

    conn = pg.connect(autocommit=True)
    assert conn.execute(f"SELECT id FROM {table}").fetchall() == [(42,)]
    # stop() must not wait for connected clients (fast shutdown, not smart).
    pg.stop(timeout=10)
    assert not pg.is_running
    assert conn.broken or conn.closed or _fails(conn)
    conn.close()
    pg.start()
    with pg.connect() as conn:
        conn.execute(f"DROP TABLE {table}")


def test_stop_is_idempotent(services):
    pg = services.postgres
    _managed(pg)
    pg.stop()
    pg.stop()
    assert not pg.is_running
    pg.start()
    pg.start()
    assert pg.is_running


# -- Typesense --------------------------------------------------------------------------------


def _ts(services) -> httpx.Client:
    ts = services.typesense
    return httpx.Client(
        base_url=ts.url, headers={"X-TYPESENSE-API-KEY": ts.api_key}, timeout=10
    )


def test_typesense_is_healthy_and_checks_the_api_key(services):
    ts = services.typesense
    assert httpx.get(f"{ts.url}/health", timeout=5).json() == {"ok": True}
    assert httpx.get(f"{ts.url}/collections", timeout=5).status_code == 401
    bad = {"X-TYPESENSE-API-KEY": ts.api_key + "x"}
    assert httpx.get(f"{ts.url}/collections", headers=bad, timeout=5).status_code == 401
    with _ts(services) as client:
        assert client.get("/collections").status_code == 200


def test_typesense_restart_keeps_collection(services):
    ts = services.typesense
    _managed(ts)
    name = _name("harness")
    with _ts(services) as client:
        schema = {"name": name, "fields": [{"name": "title", "type": "string"}]}
        assert client.post("/collections", json=schema).status_code == 201
        r = client.post(
            f"/collections/{name}/documents/import",
            params={"action": "upsert"},
            content='{"id": "1", "title": "kept"}\n{"id": "2", "title": "too"}',
        )
        assert r.status_code == 200 and '"success":false' not in r.text
    port = ts.port

    ts.restart()

    assert ts.is_running and ts.port == port
    with _ts(services) as client:
        info = client.get(f"/collections/{name}").json()
        assert info["num_documents"] == 2
        assert client.get(f"/collections/{name}/documents/1").json()["title"] == "kept"
        client.delete(f"/collections/{name}")


# -- MongoDB (nx-27017) -----------------------------------------------------------------------


def test_mongo_ping_insert_find(services):
    with services.mongo.client() as client:
        assert client.admin.command("ping")["ok"] == 1
        coll = client[_name("t")]["things"]
        coll.insert_one({"_id": "a", "n": 1})
        coll.update_one({"_id": "a"}, {"$inc": {"n": 1}})
        assert coll.find_one({"_id": "a"}) == {"_id": "a", "n": 2}
        client.drop_database(coll.database.name)


def test_mongo_databases_are_isolated(services):
    """Each test uses its own MONGO_DB_NAME: same collection names must not meet."""
    with services.mongo.client() as client:
        a, b = client[_name("t")], client[_name("t")]
        a.checkpoint.insert_one({"_id": "job", "owner": "a"})
        assert b.checkpoint.find_one({"_id": "job"}) is None
        client.drop_database(b.name)
        assert a.checkpoint.find_one({"_id": "job"})["owner"] == "a"
        client.drop_database(a.name)


def test_mongo_restart_and_crash_keep_data(services):
    mongo = services.mongo
    _managed(mongo)
    db_name = _name("t")
    with mongo.client() as client:
        client[db_name].checkpoint.insert_one({"_id": "job", "last_id": 10})
    port = mongo.port

    mongo.restart()
    assert mongo.is_running and mongo.port == port
    with mongo.client() as client:
        coll = client[db_name].checkpoint
        assert coll.find_one({"_id": "job"})["last_id"] == 10
        coll.update_one({"_id": "job"}, {"$set": {"last_id": 20}})

    mongo.kill()
    mongo.start()
    with mongo.client() as client:
        assert client[db_name].checkpoint.find_one({"_id": "job"})["last_id"] == 20
        client.drop_database(db_name)


# -- external servers -------------------------------------------------------------------------


def test_external_servers_are_used_and_cannot_be_restarted(services, tmp_path):
    pg, ts, mongo = services.postgres, services.typesense, services.mongo
    environ = {
        "TEST_DB_HOST": pg.host,
        "TEST_DB_PORT": str(pg.port),
        "TEST_DB_USER": pg.user,
        "TEST_DB_PASSWORD": pg.password,
        "TEST_DB_DATABASE": pg.database,
        "TEST_MONGO_URI": mongo.uri,
        "TEST_TYPESENSE_HOST": ts.host,
        "TEST_TYPESENSE_PORT": str(ts.port),
        "TEST_TYPESENSE_API_KEY": ts.api_key,
    }
    external = TestServices(environ=environ, base_dir=str(tmp_path))
    external.start()  # only checks that each answers
    try:
        assert all(s.external for s in external.servers)
        assert external.env() == services.env()
        for server in external.servers:
            for operation in (server.restart, server.stop, server.kill):
                with pytest.raises(ExternalServer, match="is external"):
                    operation()
    finally:
        external.stop()
    assert all(s.is_running for s in services.servers if not s.external)
