"""The engine's ordering and resumption, with an in-memory job and checkpoint store."""

from typing import Sequence

import psycopg
import pytest

from worker.checkpoint import MemoryCheckpointStore, Status
from worker.engine import Engine, EngineOptions, UnknownPhase
from worker.exceptions import ServiceUnavailable
from worker.job import Counters, Job, KeysetPhase, Step
from worker.retry import RetryPolicy
from worker.stop import StopFlag

ROWS = list(range(1, 26))


class Numbers(KeysetPhase):
    """Walks ROWS; can ask for a stop after N batches or fail transiently a few times."""

    name = "numbers"
    batch_size = 10

    def __init__(self, job: "NumbersJob"):
        self.job = job

    def count(self) -> int:
        return len(ROWS)

    def fetch(self, after, limit) -> Sequence[tuple]:
        return [(r,) for r in ROWS if after is None or r > after][:limit]

    def process(self, rows) -> Counters:
        if self.job.transient_failures:
            self.job.transient_failures -= 1
            raise psycopg.OperationalError("connection reset")
        self.job.processed.extend(r[0] for r in rows)
        self.job.batches += 1
        if self.job.stop_after == self.job.batches:
            self.job.stop.request("test")
        return {"rows": len(rows)}


class Setup(Step):
    name = "setup"

    def __init__(self, job: "NumbersJob"):
        self.job = job

    def run(self) -> Counters:
        self.job.setups += 1
        return {"setups": 1}


class NumbersJob(Job):
    name = "numbers"
    checkpoint_id = "numbers_job"

    def __init__(self, stop: StopFlag, stop_after: int | None = None, transient_failures: int = 0):
        self.stop, self.stop_after, self.transient_failures = stop, stop_after, transient_failures
        self.processed: list[int] = []
        self.batches = 0
        self.setups = 0

    def phases(self):
        return (Setup(self), Numbers(self))


def run(store, **job_args):
    stop = StopFlag()
    job = NumbersJob(stop, **job_args)
    engine = Engine(job, store, stop, RetryPolicy(max_attempts=3, max_wait_seconds=0, initial_wait_seconds=0), EngineOptions(owner="me"))
    return job, engine.run()


def test_runs_every_phase_and_saves_after_every_batch():
    store = MemoryCheckpointStore()
    job, cp = run(store)
    assert cp.status is Status.COMPLETED
    assert job.processed == ROWS
    assert cp.counters == {"setups": 1, "rows": 25}
    batch_saves = [s for s in store.saved if s.phase == "numbers" and s.batch_no > 0]
    assert [s.last_id for s in batch_saves][:3] == [10, 20, 25]
    assert [s.counters.get("rows") for s in batch_saves][:3] == [10, 20, 25]


def test_a_stop_keeps_the_position_and_a_restart_redoes_nothing():
    store = MemoryCheckpointStore()
    first, cp = run(store, stop_after=1)
    assert cp.status is Status.INTERRUPTED
    assert (cp.phase, cp.last_id, cp.batch_no) == ("numbers", 10, 1)
    second, cp = run(store)
    assert cp.status is Status.COMPLETED
    assert first.processed + second.processed == ROWS
    assert second.setups == 0, "a finished phase must not run again"
    assert cp.counters == {"setups": 1, "rows": 25}


def test_transient_errors_are_retried_on_the_same_rows():
    job, cp = run(MemoryCheckpointStore(), transient_failures=2)
    assert cp.status is Status.COMPLETED
    assert job.processed == ROWS


def test_exhausted_retries_fail_without_advancing():
    store = MemoryCheckpointStore()
    with pytest.raises(ServiceUnavailable) as caught:
        run(store, transient_failures=5)
    assert caught.value.service == "postgres"
    last = store.load("numbers_job")
    assert last.status is Status.FAILED
    assert last.last_id is None and last.counters == {"setups": 1}
    assert "connection reset" in last.error


def test_a_completed_job_touches_nothing():
    store = MemoryCheckpointStore()
    run(store)
    job, cp = run(store)
    assert job.processed == [] and job.setups == 0
    assert cp.status is Status.COMPLETED


def test_a_checkpoint_from_another_job_version_is_refused():
    store = MemoryCheckpointStore()
    run(store, stop_after=1)
    saved = store.load("numbers_job")
    saved.phase = "renamed"
    store.saved.append(saved)
    with pytest.raises(UnknownPhase, match="renamed"):
        run(store)
