"""The job lease: who may write the checkpoint, kept alive by a heartbeat.

A batch can take longer than the lease (retries while a server is down), so renewal cannot wait
for the next checkpoint save; a background thread renews it every third of its lifetime. If a
renewal finds the lease gone, another worker has taken over and this one must stop.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading

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
