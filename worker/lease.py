"""The job lease: who may write the checkpoint, kept alive by a heartbeat.

A batch can take longer than the lease (retries while a server is down), so renewal cannot wait
for the next checkpoint save; a background thread renews it every third of its lifetime. If a
renewal finds the lease gone, another worker has taken over and this one must stop.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import secrets
import socket
import tempfile
import threading
from pathlib import Path

import structlog

from worker.checkpoint import CheckpointStore
from worker.exceptions import LeaseLost
from worker.stop import StopFlag

log = structlog.get_logger("worker.lease")

LEASE_LOST = "lease lost"


def default_owner() -> str:
    """`host:pid:nonce`, with a fresh random nonce on every call (the CLI makes one per run).

    `host:pid` alone is not unique: two containers can share a hostname, and under an init
    such as tini the worker's pid is predictable, so both would pass the lease's owner check
    and write the same job. With the nonce no process is ever taken for another, not even a
    restarted container for the worker it replaces: after a crash or a kill the new process
    waits for the old lease to expire (up to LEASE_TTL_SECONDS; the engine waits up to twice
    that plus 5 s before exiting 3). A clean stop releases the lease, so the next start takes
    it at once. The `host:pid` part is there for people reading `status` and the logs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"


def default_claim_dir() -> Path:
    """Where `LocalClaim` files live: the temporary directory (TMPDIR), which survives a
    container's restart (not its removal). Under Kubernetes, mount an emptyDir there for a
    restarted container to find its predecessor's claim."""
    return Path(tempfile.gettempdir()) / "backfill-worker-leases"


class LocalClaim:
    """A file per run on this machine naming the lease owner that last held the run here,
    locked (flock) by that owner for as long as it holds the lease.

    The kernel drops a flock when its process dies, however it dies (SIGKILL, the OOM killer),
    and keeps it while the process lives, however stuck. So when the run's lease is held by X,
    and this file names X while its lock is free, X is certainly dead: X wrote the file on this
    filesystem and no longer holds it. The successor takes the lease over at once instead of
    waiting out its expiry, which after a crash is the worker's usual restart. A worker on
    another machine, or in another container, writes a file this one never sees, so it is
    never judged dead this way: its lease is waited out as before, and the fence (every write
    conditional on the lease owner) is unchanged.
    """

    def __init__(self, directory: Path, checkpoint_id: str):
        digest = hashlib.sha256(checkpoint_id.encode()).hexdigest()[:12]
        self.path = directory / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', checkpoint_id)[:80]}-{digest}.lock"
        self._fd: int | None = None
        #: Whether this process named itself in the file (it holds the lease).
        self.recorded = False

    def dead_owner(self) -> str | None:
        """The owner this file names, if its lock is free (we take it): a dead process, or
        None when another live process here holds the lock or no owner was ever recorded."""
        if self._fd is None and not self._lock():
            return None
        assert self._fd is not None
        os.lseek(self._fd, 0, os.SEEK_SET)
        return os.read(self._fd, 4096).decode(errors="replace").strip() or None

    def record(self, owner: str) -> None:
        """Name `owner` (this process, now holding the lease) in the file, if we hold its lock."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, owner.encode(), 0)
            self.recorded = True

    def close(self, released: bool = False) -> None:
        """Unlock the file. `released`: the lease was given back, so the file names no one
        (the next worker has no dead holder to take over from)."""
        if self._fd is not None:
            if released and self.recorded:
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd, self.recorded = None, False

    def _lock(self) -> bool:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:  # no writable temp dir: the lease is waited out, as before
            log.debug("no local lease claim", path=str(self.path), error=str(error))
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True


def check_lease(stop: StopFlag) -> None:
    """Raise LeaseLost once this worker knows its lease was taken over. The sink calls it right
    before every write (a transaction's commit, an import), so a batch that was already in flight
    at the takeover writes nothing more: it is rolled back, and the successor redoes it."""
    if stop.reason == LEASE_LOST:
        raise LeaseLost("lease lost to another worker; not writing")


class Heartbeat:
    def __init__(self, store: CheckpointStore, job_id: str, owner: str, ttl_seconds: float, stop: StopFlag):
        self._store, self._job_id, self._owner = store, job_id, owner
        self._ttl = ttl_seconds
        self._stop = stop
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
        self.lost = False

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._done.wait(self._ttl / 3):
            try:
                renewed = self._store.renew(self._job_id, self._owner, self._ttl)
            except Exception as error:  # a heartbeat must never kill the worker; saves will tell
                log.warning("lease renewal failed", job_id=self._job_id, error=f"{type(error).__name__}: {error}")
                continue
            if not renewed:
                self.lost = True
                log.error("lease lost to another worker; stopping", job_id=self._job_id)
                self._stop.request(LEASE_LOST)
                return
