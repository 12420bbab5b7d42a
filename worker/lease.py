"""The job lease: who may write the checkpoint, kept alive by a heartbeat.

A batch can take longer than the lease (retries while a server is down), so renewal cannot wait
for the next checkpoint save; a background thread renews it every third of its lifetime. If a
renewal finds the lease gone, another worker has taken over and this one must stop.
"""

from __future__ import annotations

import os
import socket
import threading

import structlog

from worker.checkpoint import CheckpointStore
from worker.stop import StopFlag

log = structlog.get_logger("worker.lease")

LEASE_LOST = "lease lost"


def default_owner() -> str:
    """`host:pid`. A restarted container keeps its hostname and runs as pid 1, so it takes its
    own lease back at once; a different process has to wait for the lease to expire."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
