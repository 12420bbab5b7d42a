"""Runs a job: takes its lease, walks its phases from the checkpoint, and finishes or stops.

The batch loop of a keyset phase is in `pipeline.py`; this module owns the run around it: the
lease and its heartbeat, phase order, status changes, one-off steps and retrying recorded
failures. Stop requests are honoured at batch boundaries and during sleeps, throttle pauses and
retry backoffs, never mid-write.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Callable, TypeVar

import structlog

from worker.batches import BatchRunner
from worker.checkpoint import Checkpoint, CheckpointStore, Status, add_counters
from worker.exceptions import LeaseHeld, LeaseLost, UnknownPhase
from worker.failures import FailureStore
from worker.job import BatchResult, Failure, Job, KeysetPhase, Phase, Step
from worker.lease import LEASE_LOST, Heartbeat, LocalClaim
from worker.pipeline import KeysetPipeline, PipelineOptions
from worker.retry import RetryPolicy
from worker.stop import StopFlag, StopRequested
from worker.throttle import Throttler

T = TypeVar("T")
log = structlog.get_logger("worker.engine")


@dataclass(frozen=True)
class EngineOptions:
    owner: str
    lease_ttl_seconds: float = 60.0
    #: How long to wait at start for another worker's lease to expire before giving up.
    lease_wait_seconds: float | None = None
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    #: A dry run writes nothing, so a phase's second walk would find what its first found.
    dry_run: bool = False
    #: Where this machine's `LocalClaim` files are (None: no claim, a dead holder's lease is
    #: waited out). A dry run has none: it takes no real lease.
    claim_dir: Path | None = None


class Engine:
    def __init__(
        self,
        job: Job,
        store: CheckpointStore,
        failures: FailureStore,
        stop: StopFlag,
        retry: RetryPolicy,
        options: EngineOptions,
        throttler: Throttler | None = None,
    ):
        self.job, self.store, self.stop, self.retry, self.options = job, store, stop, retry, options
        self.failures = failures
        self.batches = BatchRunner(job.run.name, failures, self._call)
        self.pipeline = KeysetPipeline(
            job.run.name, self.batches, self._call, self._save, stop, throttler or Throttler([], stop), options.pipeline
        )
        self.log = log.bind(job=job.run.name)
        self.claim = LocalClaim(options.claim_dir, job.run.checkpoint_id) if options.claim_dir else None

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> Checkpoint | None:
        """Run the job to completion or to a clean stop; return the last saved checkpoint
        (None when stopped before this worker could take the job's lease)."""
        self._call(self.job.check, "preflight checks")
        return self._with_lease(self._run)

    def retry_failures(self) -> Checkpoint | None:
        """Process the recorded failures again (after the data was fixed); resolve those that pass."""
        return self._with_lease(self._retry_failures)

    def _with_lease(self, body: Callable[[Checkpoint], Checkpoint]) -> Checkpoint | None:
        try:
            cp = self._acquire()
        except StopRequested:
            self.log.info("stopped while waiting for the lease; nothing was done", reason=self.stop.reason)
            return None
        finally:
            if self.claim and not self.claim.recorded:
                self.claim.close()
        try:
            with Heartbeat(self.store, cp.job_id, self.options.owner, self.options.lease_ttl_seconds, self.stop) as heartbeat:
                try:
                    return body(cp)
                except StopRequested:
                    if heartbeat.lost or self.stop.reason == LEASE_LOST:
                        raise LeaseLost(f"job {cp.job_id!r}: lease lost to another worker") from None
                    if cp.status is Status.RUNNING:
                        self._finish(cp, Status.INTERRUPTED)
                    self.log.info("stopped cleanly", reason=self.stop.reason, phase=cp.phase, last_id=cp.last_id, batch_no=cp.batch_no)
                    return cp
        except LeaseLost:
            raise
        except Exception as error:
            self._mark_failed(cp, error)
            raise
        finally:
            self._release(cp)

    def _run(self, cp: Checkpoint) -> Checkpoint:
        if cp.status.finished:
            self.log.info("already completed; nothing to do", status=str(cp.status), counters=cp.counters, updated_at=str(cp.updated_at))
            return cp
        cp.transition(Status.RUNNING)
        self._save(cp)
        self.log.info("job started" if cp.batch_no == 0 else "job resumed", phase=cp.phase, last_id=cp.last_id, batch_no=cp.batch_no)
        phases = list(self.job.phases())
        names = [p.name for p in phases]
        if cp.phase is None:
            cp.enter_phase(names[0])
        if cp.phase not in names:
            raise UnknownPhase(f"checkpoint is at phase {cp.phase!r}, which job {self.job.name!r} does not have ({', '.join(names)})")
        remaining = phases[names.index(cp.phase):]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="early-prepare") as early:
            try:
                # Phases after the current one have not started: their prepares are fresh ones.
                ahead = {
                    p.name: early.submit(self._call, lambda p=p: p.prepare(False), f"{p.name}: prepare (early)")
                    for p in remaining[1:]
                    if isinstance(p, KeysetPhase) and p.prepare_early
                }
                for phase in remaining:
                    if cp.phase != phase.name:
                        cp.enter_phase(phase.name)
                        self._save(cp)
                    self._run_phase(phase, cp, ahead.get(phase.name))
            except BaseException:
                self.stop.request(self.stop.reason or "error")  # ends an early prepare still running
                raise
        if cp.differences:
            self._finish(cp, Status.COMPLETED_WITH_DIFFERENCES)
            self.log.warning("job completed with differences", phase=cp.phase, passes=cp.phase_pass, differences=cp.differences, counters=cp.counters)
        else:
            self._finish(cp, Status.COMPLETED)
        self.log.info("job completed", status=str(cp.status), batches=cp.batch_no, counters=cp.counters)
        return cp

    def _run_phase(self, phase: Phase, cp: Checkpoint, prepared: Future | None) -> None:
        self._check_stop()
        if isinstance(phase, Step):
            self._run_step(phase, cp)
        elif isinstance(phase, KeysetPhase):
            self._run_walks(phase, cp, prepared)
        else:
            raise TypeError(f"phase {phase.name!r} is neither a Step nor a KeysetPhase")

    def _run_walks(self, phase: KeysetPhase, cp: Checkpoint, prepared: Future | None) -> None:
        """Walk the phase; again, from its start, while a walk found differences and passes
        are left. What the last walk found when none is left is the job's `differences`."""
        while True:
            self.pipeline.run(phase, cp, prepared if cp.phase_pass == 1 else None)
            if phase.passes_counter:
                cp.add({phase.passes_counter: 1})
            found = phase.differences(cp.phase_counters)
            if found == 0 or cp.phase_pass >= (1 if self.options.dry_run else phase.max_passes):
                cp.differences = found
                self._save(cp)
                return
            self.log.info("another pass", phase=phase.name, passes_done=cp.phase_pass, differences=found, counters=cp.phase_counters)
            cp.next_pass()
            self._save(cp)

    def _run_step(self, step: Step, cp: Checkpoint) -> None:
        """Like a batch: counts taken before the step's write are saved first and reused on a redo."""
        if step.verifies and self.options.dry_run:
            self.log.info("dry run: verify step skipped (nothing was written to verify)", phase=step.name)
            return
        pending = next((i for i in cp.intents if i["phase"] == step.name), None)
        pre = pending["pre"] if pending else self._call(step.tally, f"{step.name}: tally")
        if not pending:
            cp.intents.append({"phase": step.name, "pre": pre})
            self._save(cp)
        counters = dict(pre)
        result = self._call(step.run, step.name)
        if isinstance(result, BatchResult):
            self._record_step_failures(step, result.failures)
            add_counters(counters, {**result.counters, "failures": len(result.failures)})
        else:
            add_counters(counters, result)
        cp.intents = [i for i in cp.intents if i["phase"] != step.name]
        cp.add(counters)
        self._save(cp)
        self.log.info("phase done", phase=step.name, counters=counters)

    def _record_step_failures(self, step: Step, failures: list[Failure]) -> None:
        """A step's failures are all it found this time (it runs whole): record them, and
        resolve the ones recorded before that it no longer reports (a file fixed since)."""
        run = self.job.run.name
        current = {f.key for f in failures}
        gone = [r["key"] for r in self._call(lambda: self.failures.list(run), "failures: list") if r["phase"] == step.name and r["key"] not in current]
        if failures:
            self._call(lambda: self.failures.record(run, step.name, failures), "failures: record")
            self.log.warning("step recorded failures", phase=step.name, count=len(failures), first_key=failures[0].key, first_error=failures[0].error)
        if gone:
            self._call(lambda: self.failures.resolve(run, step.name, gone), "failures: resolve")

    # -- retrying recorded failures ------------------------------------------------------------

    def _retry_failures(self, cp: Checkpoint) -> Checkpoint:
        phases = {p.name: p for p in self.job.phases()}
        records = self._call(lambda: self.failures.list(self.job.run.name), "failures: list")
        for phase_name, group in groupby(records, key=lambda r: r["phase"]):
            self._check_stop()
            if phase_name not in phases:
                raise UnknownPhase(f"failures recorded for phase {phase_name!r}, which job {self.job.name!r} does not have")
            phase = phases[phase_name]
            if isinstance(phase, Step):
                self.log.warning("failures of a step are not retried one by one: the step runs whole, so fix them and run the job again (after `reset`)", phase=phase_name, failures=len(list(group)))
                continue
            assert isinstance(phase, KeysetPhase)
            keys = [r["key"] for r in group]
            rows = self._call(lambda: phase.fetch_keys([phase.key_kind.decode(k) for k in keys]), f"{phase_name}: fetch failed rows")
            counters, failures = self.batches.run(phase, rows, phase.tally(rows)) if rows else ({}, [])
            still_failing = {f.key for f in failures}
            resolved = [k for k in keys if k not in still_failing]
            add_counters(counters, {"failures": -len(keys)})
            cp.add(counters)
            self._save(cp)
            self._call(lambda: self.failures.resolve(self.job.run.name, phase_name, resolved), "failures: resolve")
            self.log.info("failures retried", phase=phase_name, retried=len(keys), resolved=len(resolved), still_failing=len(still_failing), rows_gone=len(keys) - len(rows))
        return cp

    # -- checkpoint and lease ----------------------------------------------------------------

    def _acquire(self) -> Checkpoint:
        """Take the lease, at once from a holder `LocalClaim` proves dead, else waiting
        (stoppably) for the holder's lease to run out."""
        wait = self.options.lease_wait_seconds
        if wait is None:
            wait = 2 * self.options.lease_ttl_seconds + 5
        waited = 0.0
        while True:
            dead = self.claim.dead_owner() if self.claim else None
            try:
                cp = self._call(
                    lambda: self.store.acquire(
                        self.job.run.checkpoint_id, self.job.name, self.options.owner, self.options.lease_ttl_seconds,
                        dict(self.job.run.params), dead_owner=dead,
                    ),
                    "checkpoint: acquire lease",
                )
            except LeaseHeld as held:
                if waited >= wait:
                    raise
                if waited == 0:
                    self.log.warning("lease held by another worker; waiting for it to expire", owner=held.owner, expires_at=str(held.expires_at))
                self.stop.sleep(1.0)
                waited += 1.0
                continue
            if self.claim:
                self.claim.record(self.options.owner)
            if dead:
                self.log.info("the last holder of the lease on this machine died without releasing it; taken over at once", dead_owner=dead)
            return cp

    def _save(self, cp: Checkpoint) -> None:
        self._call(lambda: self.store.save(cp, self.options.owner, self.options.lease_ttl_seconds), "checkpoint: save")

    def _finish(self, cp: Checkpoint, status: Status) -> None:
        cp.transition(status)
        # Saved even when a stop was requested: a fresh flag keeps the stop from aborting it.
        self.retry.call(lambda: self.store.save(cp, self.options.owner, self.options.lease_ttl_seconds), what="checkpoint: final save", stop=StopFlag())

    def _mark_failed(self, cp: Checkpoint, error: Exception) -> None:
        """Best effort: mark the checkpoint failed; position and counters stay as last saved."""
        if cp.status is not Status.RUNNING:
            return
        try:
            cp.transition(Status.FAILED, error=f"{type(error).__name__}: {error}")
            self.store.save(cp, self.options.owner, self.options.lease_ttl_seconds)
        except Exception as secondary:
            self.log.warning("could not mark checkpoint failed", error=f"{type(secondary).__name__}: {secondary}")

    def _release(self, cp: Checkpoint) -> None:
        released = False
        try:
            self.store.release(cp.job_id, self.options.owner)
            released = True
        except Exception as error:
            self.log.warning("could not release lease; it will expire", error=f"{type(error).__name__}: {error}")
        finally:
            if self.claim:
                self.claim.close(released=released)

    def _check_stop(self) -> None:
        if self.stop.requested:
            raise StopRequested(self.stop.reason or "stop")

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return self.retry.call(fn, what=what, stop=self.stop)
