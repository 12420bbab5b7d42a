"""The checkpoint: one MongoDB document per job, the only record of how far the job got.

Every write is a single-document update (a standalone MongoDB has no multi-document
transactions) and is conditional on the lease owner, so a worker that was presumed dead and
replaced cannot write over its successor's progress: it gets `LeaseLost` instead.
"""

from __future__ import annotations

import copy
import enum
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import pymongo
from pymongo.collection import Collection

from worker.exceptions import LeaseHeld, LeaseLost


class Status(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    COMPLETED = "completed"
    #: Completed, but the last pass of a repeating phase (reconcile) still found differences.
    COMPLETED_WITH_DIFFERENCES = "completed_with_differences"

    @property
    def finished(self) -> bool:
        return self in (Status.COMPLETED, Status.COMPLETED_WITH_DIFFERENCES)


#: Allowed status changes, and when each happens.
VALID_TRANSITIONS: dict[Status, set[Status]] = {
    Status.PENDING: {Status.RUNNING},  # first start
    Status.RUNNING: {
        Status.RUNNING,  # a restart after a crash finds it still "running"
        Status.INTERRUPTED,  # SIGTERM/SIGINT at a batch boundary
        Status.FAILED,  # retries exhausted or a fatal error
        Status.COMPLETED,  # last phase finished
        Status.COMPLETED_WITH_DIFFERENCES,  # last phase finished; its last pass still found some
    },
    Status.INTERRUPTED: {Status.RUNNING},  # resumed
    Status.FAILED: {Status.RUNNING},  # resumed after the cause was fixed
    Status.COMPLETED: set(),  # only `reset` starts it over
    Status.COMPLETED_WITH_DIFFERENCES: set(),  # likewise; `verify` shows what differs
}


def add_counters(total: dict[str, int], increments: dict[str, int]) -> None:
    for name, value in increments.items():
        total[name] = total.get(name, 0) + value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Checkpoint:
    job_id: str
    job: str
    #: The parameters that define the run (`job_settings.Run`): none for a job's default run.
    params: dict[str, str] = field(default_factory=dict)
    phase: str | None = None
    last_id: Any = None
    batch_no: int = 0
    phase_done: int = 0
    phase_total: int | None = None
    counters: dict[str, int] = field(default_factory=dict)
    #: Which walk of the current phase this is (a repeating phase walks up to max_passes times),
    #: and the counters this walk has added so far.
    phase_pass: int = 1
    phase_counters: dict[str, int] = field(default_factory=dict)
    #: What the last walk of a repeating phase still found when no pass was left.
    differences: int = 0
    #: Batches in flight, in key order: range, row count and pre-image counts, saved before
    #: their writes so a redo after a crash can reuse them.
    intents: list[dict[str, Any]] = field(default_factory=list)
    status: Status = Status.PENDING
    error: str | None = None
    started_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0

    def transition(self, status: Status, error: str | None = None) -> None:
        if status not in VALID_TRANSITIONS[self.status]:
            raise ValueError(f"checkpoint {self.job_id}: cannot go from {self.status} to {status}")
        self.status = status
        self.error = error

    def add(self, increments: dict[str, int]) -> None:
        add_counters(self.counters, increments)
        add_counters(self.phase_counters, increments)

    def enter_phase(self, phase: str) -> None:
        self.phase = phase
        self.phase_pass = 0
        self.next_pass()

    def next_pass(self) -> None:
        """Walk the current phase again from its start."""
        self.last_id, self.phase_done, self.phase_total = None, 0, None
        self.phase_pass += 1
        self.phase_counters = {}
        self.intents = []

    def to_document(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["_id"] = doc.pop("job_id")
        doc["status"] = str(self.status)
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> "Checkpoint":
        names = set(cls.__dataclass_fields__)
        values = {k: v for k, v in doc.items() if k in names}
        values["job_id"] = doc["_id"]
        values["status"] = Status(doc.get("status", Status.PENDING))
        values["counters"] = dict(doc.get("counters") or {})
        values["phase_counters"] = dict(doc.get("phase_counters") or {})
        values["intents"] = list(doc.get("intents") or [])
        values["params"] = dict(doc.get("params") or {})
        return cls(**values)


class CheckpointStore(Protocol):
    def load(self, job_id: str) -> Checkpoint | None: ...
    def acquire(
        self, job_id: str, job: str, owner: str, ttl_seconds: float, params: dict[str, str] | None = None, dead_owner: str | None = None
    ) -> Checkpoint: ...
    def save(self, checkpoint: Checkpoint, owner: str, ttl_seconds: float) -> None: ...
    def renew(self, job_id: str, owner: str, ttl_seconds: float) -> bool: ...
    def release(self, job_id: str, owner: str) -> None: ...


class MongoCheckpointStore:
    """Checkpoints in `collection`, leases inside the same document."""

    def __init__(self, collection: Collection):
        self._col = collection

    def load(self, job_id: str) -> Checkpoint | None:
        doc = self._col.find_one({"_id": job_id})
        return Checkpoint.from_document(doc) if doc else None

    def lease_of(self, job_id: str) -> dict[str, Any] | None:
        doc = self._col.find_one({"_id": job_id}, {"lease": 1})
        return (doc or {}).get("lease")

    def live_lease(self, job_id: str) -> dict[str, Any] | None:
        """The job's lease if a worker holds it now (not expired), else None."""
        doc = self._col.find_one({"_id": job_id, "lease.expires_at": {"$gt": utcnow()}}, {"lease": 1})
        return (doc or {}).get("lease")

    def acquire(
        self, job_id: str, job: str, owner: str, ttl_seconds: float, params: dict[str, str] | None = None, dead_owner: str | None = None
    ) -> Checkpoint:
        """Create the checkpoint if absent, then take its lease unless a live owner holds it.
        `dead_owner` is a holder known to be dead (`lease.LocalClaim`): its lease is taken
        over at once instead of waited out. The check and the takeover are one update, so of
        two workers that found it dead, one wins and the other waits."""
        now = utcnow()
        try:
            fresh = Checkpoint(job_id=job_id, job=job, params=dict(params or {}), started_at=now, updated_at=now)
            self._col.insert_one({**fresh.to_document(), "lease": None})
        except pymongo.errors.DuplicateKeyError:
            pass
        doc = self._col.find_one_and_update(
            {
                "_id": job_id,
                "$or": [
                    {"lease": None},
                    {"lease.owner": owner},
                    {"lease.expires_at": {"$lt": now}},
                    *([{"lease.owner": dead_owner}] if dead_owner else []),
                ],
            },
            {"$set": {"lease": _lease(owner, now, ttl_seconds)}},
            return_document=pymongo.ReturnDocument.AFTER,
        )
        if doc is None:
            lease = self.lease_of(job_id) or {}
            raise LeaseHeld(job_id, lease.get("owner", "?"), lease.get("expires_at"))
        return Checkpoint.from_document(doc)

    def save(self, checkpoint: Checkpoint, owner: str, ttl_seconds: float) -> None:
        now = utcnow()
        checkpoint.updated_at = now
        doc = checkpoint.to_document()
        doc.pop("_id")
        doc.pop("version")
        result = self._col.update_one(
            {"_id": checkpoint.job_id, "lease.owner": owner},
            {"$set": {**doc, "lease": _lease(owner, now, ttl_seconds)}, "$inc": {"version": 1}},
        )
        if result.matched_count != 1:
            raise LeaseLost(f"job {checkpoint.job_id!r}: lease lost to another worker; not saving over it")
        checkpoint.version += 1

    def renew(self, job_id: str, owner: str, ttl_seconds: float) -> bool:
        now = utcnow()
        result = self._col.update_one(
            {"_id": job_id, "lease.owner": owner},
            {"$set": {"lease": _lease(owner, now, ttl_seconds)}},
        )
        return result.matched_count == 1

    def release(self, job_id: str, owner: str) -> None:
        self._col.update_one({"_id": job_id, "lease.owner": owner}, {"$set": {"lease": None}})

    def delete(self, job_id: str) -> bool:
        return self._col.delete_one({"_id": job_id}).deleted_count == 1

    def all(self) -> list[tuple[Checkpoint, dict[str, Any] | None]]:
        return [(Checkpoint.from_document(d), d.get("lease")) for d in self._col.find().sort("_id", 1)]


class MemoryCheckpointStore:
    """For dry runs: starts from a copy of the real checkpoint and never writes it back."""

    def __init__(self, initial: Checkpoint | None = None):
        self._initial = copy.deepcopy(initial)
        self.saved: list[Checkpoint] = []

    def load(self, job_id: str) -> Checkpoint | None:
        return copy.deepcopy(self.saved[-1] if self.saved else self._initial)

    def acquire(
        self, job_id: str, job: str, owner: str, ttl_seconds: float, params: dict[str, str] | None = None, dead_owner: str | None = None
    ) -> Checkpoint:
        now = utcnow()
        return self.load(job_id) or Checkpoint(job_id=job_id, job=job, params=dict(params or {}), started_at=now, updated_at=now)

    def save(self, checkpoint: Checkpoint, owner: str, ttl_seconds: float) -> None:
        checkpoint.updated_at = utcnow()
        checkpoint.version += 1
        self.saved.append(copy.deepcopy(checkpoint))

    def renew(self, job_id: str, owner: str, ttl_seconds: float) -> bool:
        return True

    def release(self, job_id: str, owner: str) -> None:
        pass


def _lease(owner: str, now: datetime, ttl_seconds: float) -> dict[str, Any]:
    return {"owner": owner, "expires_at": now + timedelta(seconds=ttl_seconds)}
