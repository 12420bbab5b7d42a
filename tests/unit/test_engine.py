"""The engine's ordering and resumption, with an in-memory job and checkpoint store."""

import threading
import time
from typing import Sequence

import psycopg
import pytest

from worker.batches import SystemicBatchError
from worker.checkpoint import MemoryCheckpointStore, Status
from worker.engine import Engine, EngineOptions, UnknownPhase
from worker.exceptions import ServiceUnavailable
from worker.failures import MemoryFailureStore
from worker.job import BatchResult, Counters, Job, KeysetPhase, Step
from worker.pipeline import PipelineOptions
from worker.retry import RetryPolicy
from worker.stop import StopFlag

ROWS = list(range(1, 26))


class Crash(Exception):
    """Stands for the process dying after a batch's writes, before its checkpoint."""


class Numbers(KeysetPhase):
    """Walks ROWS; can ask for a stop after N batches, fail transiently a few times, refuse
    some rows, or "crash" after writing a batch."""

    name = "numbers"
    batch_size = 10
    scanned_counter = "rows"

    def __init__(self, job: "NumbersJob"):
        self.job = job

    def count(self) -> int:
        return len(ROWS)

    def fetch(self, after, limit) -> Sequence[tuple]:
        return [(r,) for r in ROWS if after is None or r > after][:limit]

    def fetch_keys(self, keys) -> Sequence[tuple]:
        return [(k,) for k in sorted(keys) if k in ROWS]

    def tally(self, rows) -> Counters:
        # "needs work" is a pre-image: rows already written no longer need it.
        return {"needed_work": sum(1 for (r,) in rows if r not in self.job.written)}

    def process(self, rows) -> BatchResult:
        if self.job.transient_failures:
            self.job.transient_failures -= 1
            raise psycopg.OperationalError("connection reset")
        bad = [r for (r,) in rows if r in self.job.refused]
        if bad:
            raise psycopg.errors.CheckViolation(f"row {bad[0]} refused")
        self.job.processed.extend(r[0] for r in rows)
        self.job.written.update(r[0] for r in rows)
        self.job.batches += 1
        if self.job.crash_after == self.job.batches:
            raise Crash()
        if self.job.stop_after == self.job.batches:
            self.job.stop.request("test")
        return BatchResult({"written": len(rows)})


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

    def __init__(self, stop: StopFlag, stop_after: int | None = None, transient_failures: int = 0,
                 refused: set[int] = frozenset(), crash_after: int | None = None, written: set[int] | None = None):
        self.stop, self.stop_after, self.transient_failures = stop, stop_after, transient_failures
        self.refused, self.crash_after = refused, crash_after
        self.written = written if written is not None else set()
        self.processed: list[int] = []
        self.batches = 0
        self.setups = 0

    def phases(self):
        return (Setup(self), Numbers(self))


def engine_for(store, failures=None, **job_args):
    stop = StopFlag()
    job = NumbersJob(stop, **job_args)
    policy = RetryPolicy(timeout_seconds=10, max_attempts=3, max_wait_seconds=0, initial_wait_seconds=0)
    return job, Engine(job, store, failures or MemoryFailureStore(), stop, policy, EngineOptions(owner="me"))


def run(store, failures=None, **job_args):
    job, engine = engine_for(store, failures, **job_args)
    return job, engine.run()


COMPLETE = {"setups": 1, "rows": 25, "needed_work": 25, "written": 25, "failures": 0}


def test_runs_every_phase_and_saves_after_every_batch():
    store = MemoryCheckpointStore()
    job, cp = run(store)
    assert cp.status is Status.COMPLETED
    assert sorted(job.processed) == ROWS  # batches run concurrently; each row once
    assert cp.counters == COMPLETE
    commits = [s for prev, s in zip(store.saved, store.saved[1:]) if s.batch_no > prev.batch_no]
    assert [s.last_id for s in commits] == [10, 20, 25]
    assert [s.counters.get("rows") for s in commits] == [10, 20, 25]
    for commit in commits:
        assert commit.last_id not in [i["to_id"] for i in commit.intents], "a committed batch leaves no intent"


def test_a_stop_keeps_the_position_and_a_restart_redoes_nothing():
    store = MemoryCheckpointStore()
    first, cp = run(store, stop_after=1)
    assert cp.status is Status.INTERRUPTED
    assert (cp.phase, cp.last_id, cp.batch_no) == ("numbers", 10, 1)
    second, cp = run(store)
    assert cp.status is Status.COMPLETED
    assert sorted(first.processed + second.processed) == ROWS
    assert second.setups == 0, "a finished phase must not run again"
    assert cp.counters == COMPLETE


def test_transient_errors_are_retried_on_the_same_rows():
    job, cp = run(MemoryCheckpointStore(), transient_failures=2)
    assert cp.status is Status.COMPLETED
    assert sorted(job.processed) == ROWS  # batches run concurrently; each row once


def test_exhausted_retries_fail_without_advancing():
    store = MemoryCheckpointStore()
    # Down for good: with two batches in flight, a few failures shared between them could let
    # the first one succeed on its last attempt.
    with pytest.raises(ServiceUnavailable) as caught:
        run(store, transient_failures=1_000)
    assert caught.value.service == "postgres"
    last = store.load("numbers_job")
    assert last.status is Status.FAILED
    assert last.last_id is None and last.counters == {"setups": 1}
    assert [(i["from_id"], i["to_id"]) for i in last.intents][:1] == [(None, 10)]
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


def test_a_batch_redone_after_a_crash_counts_as_in_an_uninterrupted_run():
    store, written = MemoryCheckpointStore(), set()
    with pytest.raises(Crash):
        run(store, crash_after=2, written=written)  # batch 2 written, its checkpoint not saved
    assert [i["to_id"] for i in store.load("numbers_job").intents][:1] == [20]
    job, cp = run(store, written=written)
    assert min(job.processed) == 11, "the interrupted batch is redone, the finished one is not"
    assert cp.counters == COMPLETE, "needed_work comes from the intent, not from the redo"


def test_rows_a_destination_refuses_are_isolated_recorded_and_retried():
    store, failures = MemoryCheckpointStore(), MemoryFailureStore()
    job, cp = run(store, failures, refused={7, 23})
    assert cp.status is Status.COMPLETED
    assert sorted(job.processed) == [r for r in ROWS if r not in (7, 23)]
    assert sorted(f["key"] for f in failures.list("numbers")) == ["23", "7"]
    assert cp.counters == {"setups": 1, "rows": 25, "needed_work": 23, "written": 23, "failures": 2}

    job, engine = engine_for(store, failures, written=set(job.processed))
    cp = engine.retry_failures()
    assert sorted(job.processed) == [7, 23]
    assert failures.list("numbers") == []
    assert cp.counters == COMPLETE


def test_a_batch_in_which_every_row_fails_stops_the_job():
    with pytest.raises(SystemicBatchError, match="all 10 rows"):
        run(MemoryCheckpointStore(), refused=set(ROWS))


class EarlyNumbers(Numbers):
    prepare_early = True

    def prepare(self, resuming: bool) -> None:
        self.job.prepares.append(resuming)
        self.job.prepared.set()


class WaitForPrepare(Step):
    """A phase two phases before the one with the early prepare."""

    name = "wait_for_prepare"

    def __init__(self, job: "EarlyPrepareJob"):
        self.job = job

    def run(self) -> Counters:
        self.job.prepared_during_first_phase = self.job.prepared.wait(timeout=3)
        return {}


class EarlyPrepareJob(NumbersJob):
    def __init__(self, stop: StopFlag):
        super().__init__(stop)
        self.prepares: list[bool] = []
        self.prepared = threading.Event()
        self.prepared_during_first_phase = False

    def phases(self):
        return (WaitForPrepare(self), Setup(self), EarlyNumbers(self))


def test_an_early_prepare_starts_with_the_job_and_runs_once():
    stop = StopFlag()
    job = EarlyPrepareJob(stop)
    policy = RetryPolicy(timeout_seconds=10, max_attempts=3, max_wait_seconds=0, initial_wait_seconds=0)
    cp = Engine(job, MemoryCheckpointStore(), MemoryFailureStore(), stop, policy, EngineOptions(owner="me")).run()
    assert cp.status is Status.COMPLETED
    assert job.prepared_during_first_phase, "the prepare should start with the job, not one phase before"
    assert job.prepares == [False]
    assert sorted(job.processed) == ROWS


class Repairs(Numbers):
    """A phase that walks again while a walk found something: the first `dirty_walks` walks
    each "repair" every row, later ones find nothing."""

    name = "repairs"
    max_passes = 3
    passes_counter = "passes"

    def process(self, rows) -> BatchResult:
        result = super().process(rows)
        if self.job.walks_done < self.job.dirty_walks:
            result.counters["repaired"] = len(rows)
        return result

    def finish(self) -> None:
        self.job.walks_done += 1

    def differences(self, walked) -> int:
        return walked.get("repaired", 0)


class RepairsJob(NumbersJob):
    def __init__(self, stop: StopFlag, dirty_walks: int, **kw):
        super().__init__(stop, **kw)
        self.dirty_walks, self.walks_done = dirty_walks, 0

    def phases(self):
        return (Repairs(self),)


def run_repairs(store, dirty_walks: int, **kw):
    stop = StopFlag()
    job = RepairsJob(stop, dirty_walks, **kw)
    policy = RetryPolicy(timeout_seconds=10, max_attempts=3, max_wait_seconds=0, initial_wait_seconds=0)
    return job, Engine(job, store, MemoryFailureStore(), stop, policy, EngineOptions(owner="me")).run()


def test_a_phase_is_walked_again_while_a_walk_found_differences():
    job, cp = run_repairs(MemoryCheckpointStore(), dirty_walks=1)
    assert cp.status is Status.COMPLETED
    assert job.walks_done == 2 and cp.counters["passes"] == 2
    assert cp.counters["repaired"] == 25 and cp.differences == 0
    assert cp.phase_pass == 2 and cp.phase_counters.get("repaired", 0) == 0, "the last walk found nothing"


def test_differences_left_after_the_last_pass_end_completed_with_differences():
    job, cp = run_repairs(MemoryCheckpointStore(), dirty_walks=10)
    assert job.walks_done == 3 == cp.counters["passes"], "no more than max_passes walks"
    assert cp.status is Status.COMPLETED_WITH_DIFFERENCES and cp.differences == 25
    again, cp = run_repairs(MemoryCheckpointStore(initial=cp), dirty_walks=10)
    assert again.walks_done == 0 and cp.status is Status.COMPLETED_WITH_DIFFERENCES, "finished: nothing to do"


def test_a_stop_in_the_second_pass_resumes_that_pass_and_counts_each_pass_once():
    store = MemoryCheckpointStore()
    # Batches 1-3 are the first walk (25 rows in batches of 10); batch 4 is the second walk's first.
    job, cp = run_repairs(store, dirty_walks=1, stop_after=4)
    assert cp.status is Status.INTERRUPTED
    assert (cp.phase_pass, cp.last_id, cp.counters["passes"]) == (2, 10, 1)
    job, cp = run_repairs(store, dirty_walks=0)
    assert cp.status is Status.COMPLETED
    assert cp.counters["passes"] == 2 and cp.counters["rows"] == 50
    assert min(job.processed) == 11, "the second pass resumes after its checkpoint"


class SlowNumbers(Numbers):
    """Every batch slow: the adaptive sizing would shrink it to BATCH_SIZE_MIN."""

    batch_size = 8
    batch_size_min = 8

    def count(self) -> int:
        return 80

    def fetch(self, after, limit) -> Sequence[tuple]:
        return [(r,) for r in range(1, 81) if after is None or r > after][:limit]

    def process(self, rows) -> BatchResult:
        self.job.sizes.append(len(rows))
        time.sleep(0.02)
        return super().process(rows)


class SlowNumbersJob(NumbersJob):
    def phases(self):
        self.sizes: list[int] = []
        return (SlowNumbers(self),)


def test_a_phase_keeps_its_batches_at_its_own_minimum_however_slow_they_are():
    stop = StopFlag()
    job = SlowNumbersJob(stop)
    options = EngineOptions(owner="me", pipeline=PipelineOptions(depth=1, batch_size_min=1, batch_target_seconds=0.001))
    Engine(job, MemoryCheckpointStore(), MemoryFailureStore(), stop, RetryPolicy(), options).run()
    assert job.sizes == [8] * 10  # BATCH_SIZE_MIN=1 would have let them shrink to 1
