"""Lease owners, and an engine whose lease is taken over: in process, with an in-memory store
that checks the owner the way MongoCheckpointStore does (tests/integration/test_lease.py runs
the real store and a real worker)."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Sequence

import pytest

from worker.checkpoint import Checkpoint, MemoryCheckpointStore
from worker.engine import Engine, EngineOptions
from worker.exceptions import LeaseLost
from worker.failures import MemoryFailureStore
from worker.job import BatchResult, Job, KeysetPhase
from worker.lease import LocalClaim, default_owner
from worker.pipeline import PipelineOptions
from worker.retry import RetryPolicy
from worker.stop import StopFlag

ME, SUCCESSOR = "me:1:aaaa", "successor:1:bbbb"
ROWS = list(range(1, 51))


def test_two_owners_made_in_one_process_differ():
    first, second = default_owner(), default_owner()

    assert first != second
    for owner in (first, second):
        host, pid, nonce = owner.rsplit(":", 2)
        assert (host, pid) == (socket.gethostname(), str(os.getpid()))
        assert len(nonce) >= 8


class LeasedStore(MemoryCheckpointStore):
    """Checks the lease owner on every write. `holder` is who owns the lease now; setting it
    to someone else is a successor taking over. `take_over_after_saves` does that right after
    the N-th successful save (say, between two batches)."""

    def __init__(self, take_over_after_saves: int | None = None):
        super().__init__()
        self.holder: str | None = None
        self.take_over_after_saves = take_over_after_saves
        self.saves_at_takeover: int | None = None
        self.refused: list[str] = []
        self._lock = threading.Lock()  # a check and its write are one step, as in MongoDB

    def take_over(self) -> None:
        with self._lock:
            self.holder = SUCCESSOR
            self.saves_at_takeover = len(self.saved)

    def acquire(self, job_id: str, job: str, owner: str, ttl_seconds: float, params=None, dead_owner=None) -> Checkpoint:
        self.holder = owner
        return super().acquire(job_id, job, owner, ttl_seconds, params)

    def save(self, checkpoint: Checkpoint, owner: str, ttl_seconds: float) -> None:
        with self._lock:
            if owner != self.holder:
                self.refused.append(str(checkpoint.status))
                raise LeaseLost(f"job {checkpoint.job_id!r}: lease lost to another worker; not saving over it")
            super().save(checkpoint, owner, ttl_seconds)
        if len(self.saved) == self.take_over_after_saves:
            self.take_over()

    def renew(self, job_id: str, owner: str, ttl_seconds: float) -> bool:
        return owner == self.holder

    def release(self, job_id: str, owner: str) -> None:
        if owner == self.holder:
            self.holder = None


class Numbers(KeysetPhase):
    name = "numbers"
    batch_size = 5

    def __init__(self, job: "NumbersJob"):
        self.job = job

    def fetch(self, after, limit) -> Sequence[tuple]:
        return [(r,) for r in ROWS if after is None or r > after][:limit]

    def process(self, rows) -> BatchResult:
        keys = [r for (r,) in rows]
        self.job.writes.append((keys, len(self.job.store.saved), self.job.store.holder == ME))
        self.job.batches += 1
        if self.job.take_over_in_batch == self.job.batches:
            self.job.store.take_over()
            time.sleep(0.3)  # the heartbeat (every ttl/3 = 0.1 s) notices while the batch is in flight
        return BatchResult({"written": len(keys)})


class NumbersJob(Job):
    name = "numbers"
    checkpoint_id = "numbers_job"

    def __init__(self, store: LeasedStore, take_over_in_batch: int | None = None):
        self.store, self.take_over_in_batch = store, take_over_in_batch
        #: Each batch's keys, how many saves had happened when it started writing, and whether
        #: this worker still held the lease then.
        self.writes: list[tuple[list[int], int, bool]] = []
        self.batches = 0

    def phases(self):
        return (Numbers(self),)


def run_engine(store: LeasedStore, job: NumbersJob, depth: int = 1, pause: float = 0.0) -> float:
    """Run the job until it raises LeaseLost; return how long that took."""
    policy = RetryPolicy(timeout_seconds=10, max_attempts=3, max_wait_seconds=0, initial_wait_seconds=0)
    options = EngineOptions(
        owner=ME, lease_ttl_seconds=0.3, pipeline=PipelineOptions(depth=depth, sleep_between_batches=pause, batch_size_max=5)
    )
    engine = Engine(job, store, MemoryFailureStore(), StopFlag(), policy, options)
    started = time.monotonic()
    with pytest.raises(LeaseLost):
        engine.run()
    return time.monotonic() - started


@pytest.mark.parametrize("depth", [1, 2])
def test_a_takeover_mid_batch_stops_the_worker_without_another_write(depth):
    store = LeasedStore()
    job = NumbersJob(store, take_over_in_batch=3)

    run_engine(store, job, depth=depth)

    assert store.holder == SUCCESSOR, "the successor's lease is left alone"
    assert len(store.saved) == store.saves_at_takeover, "not one checkpoint save after the takeover"
    last = store.saved[-1]
    assert last.status == "running", "not marked failed or interrupted over the successor"
    if depth == 1:
        assert last.batch_no == 2, "the batch in flight at the takeover is not checkpointed"
    # Writes after the takeover: only batches already in flight, each with its intent saved
    # while the lease was still ours, so the successor redoes exactly those.
    late = [keys for keys, _, ours in job.writes if not ours]
    in_flight = [list(range(int(i["from_id"] or 0) + 1, int(i["to_id"]) + 1)) for i in last.intents]
    assert all(keys in in_flight for keys in late), (late, last.intents)
    assert len(job.writes) <= 3 + (depth - 1), "no batch starts after the takeover"
    assert {keys[0] for keys, _, _ in job.writes} <= {1, 6, 11, 16}


def test_a_takeover_between_batches_is_noticed_by_the_heartbeat_and_nothing_more_is_written():
    # Taken over right after the first batch's checkpoint (saves: running, intent 1, batch 1);
    # the worker then pauses 30 s before the next batch.
    store = LeasedStore(take_over_after_saves=3)
    job = NumbersJob(store)

    elapsed = run_engine(store, job, pause=30.0)

    assert elapsed < 5, f"the pause did not end when the lease was lost ({elapsed:.1f}s)"
    assert [keys[0] for keys, _, _ in job.writes] == [1]
    assert len(store.saved) == 3 and store.refused == [], "no save was even attempted after the lease was lost"
    assert store.holder == SUCCESSOR


def test_a_local_claim_names_a_dead_holder_only_once_its_lock_is_free(tmp_path):
    holder, successor = LocalClaim(tmp_path, "backfill_x"), LocalClaim(tmp_path, "backfill_x")
    assert holder.dead_owner() is None, "a new file names no one"
    holder.record("host:7:aaaaaaaaaaaa")

    assert successor.dead_owner() is None, "a live holder keeps its lock: it is never judged dead"
    holder.close()  # what the kernel does when the holder dies without releasing its lease
    assert successor.dead_owner() == "host:7:aaaaaaaaaaaa"
    assert LocalClaim(tmp_path, "backfill_x").dead_owner() is None, "the successor holds the lock now"
    assert LocalClaim(tmp_path, "backfill_y").dead_owner() is None, "another run has a file of its own"


def test_a_released_lease_leaves_no_dead_holder_behind(tmp_path):
    holder = LocalClaim(tmp_path, "backfill_x")
    holder.dead_owner()
    holder.record("host:7:aaaaaaaaaaaa")
    holder.close(released=True)
    assert LocalClaim(tmp_path, "backfill_x").dead_owner() is None
