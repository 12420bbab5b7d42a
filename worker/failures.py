"""Rows and documents that could not be written, kept so they can be listed and retried.

One MongoDB document per (job, phase, key): recording the same failure again (a batch redone
after a crash) updates it instead of adding a duplicate, so the list stays exact.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

from pymongo.collection import Collection

from worker.checkpoint import utcnow
from worker.job import Failure


class FailureStore(Protocol):
    def record(self, job: str, phase: str, failures: Iterable[Failure]) -> None: ...
    def list(self, job: str | None = None) -> list[dict[str, Any]]: ...
    def resolve(self, job: str, phase: str, keys: Iterable[str]) -> None: ...


def _id(job: str, phase: str, key: str) -> str:
    return f"{job}:{phase}:{key}"


class MongoFailureStore:
    def __init__(self, collection: Collection):
        self._col = collection

    def record(self, job: str, phase: str, failures: Iterable[Failure]) -> None:
        now = utcnow()
        for failure in failures:
            self._col.update_one(
                {"_id": _id(job, phase, failure.key)},
                {
                    "$set": {
                        "job": job,
                        "phase": phase,
                        "key": failure.key,
                        "error": failure.error,
                        "code": failure.code,
                        "last_seen": now,
                    },
                    "$setOnInsert": {"first_seen": now},
                },
                upsert=True,
            )

    def list(self, job: str | None = None) -> list[dict[str, Any]]:
        query = {"job": job} if job else {}
        return list(self._col.find(query).sort([("job", 1), ("phase", 1), ("key", 1)]))

    def resolve(self, job: str, phase: str, keys: Iterable[str]) -> None:
        ids = [_id(job, phase, key) for key in keys]
        if ids:
            self._col.delete_many({"_id": {"$in": ids}})


class MemoryFailureStore:
    """For dry runs: failures are reported, not stored."""

    def __init__(self) -> None:
        self.failures: dict[str, dict[str, Any]] = {}

    def record(self, job: str, phase: str, failures: Iterable[Failure]) -> None:
        for f in failures:
            self.failures[_id(job, phase, f.key)] = {"job": job, "phase": phase, "key": f.key, "error": f.error, "code": f.code}

    def list(self, job: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.failures.values() if job is None or f["job"] == job]

    def resolve(self, job: str, phase: str, keys: Iterable[str]) -> None:
        for key in keys:
            self.failures.pop(_id(job, phase, key), None)
