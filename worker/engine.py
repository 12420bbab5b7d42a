"""The phase and batch loop: the one place that orders fetch, write, checkpoint and stop.

For each batch: fetch the page after the checkpoint's key, process it (the job's writes), and
only then save the checkpoint with the new key and counters. A crash anywhere before the save
means the batch is redone on restart; a crash after it means it is not. Stop requests are
honoured at batch boundaries and during sleeps and retry backoffs, never mid-write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

import structlog

from worker.checkpoint import Checkpoint, CheckpointStore, Status, add_counters
from worker.exceptions import LeaseHeld, LeaseLost, WorkerError
from worker.job import Counters, Job, KeysetPhase, Phase, Step
from worker.lease import LEASE_LOST, Heartbeat
from worker.progress import PhaseProgress, format_duration
from worker.retry import RetryPolicy
from worker.stop import StopFlag, StopRequested

T = TypeVar("T")
log = structlog.get_logger("worker.engine")


class UnknownPhase(WorkerError):
    """The checkpoint names a phase this job does not have (the job changed under it)."""


@dataclass(frozen=True)
class EngineOptions:
    owner: str
    lease_ttl_seconds: float = 60.0
    sleep_between_batches: float = 0.0
    #: How long to wait at start for another worker's lease to expire before giving up.
    lease_wait_seconds: float | None = None


class Engine:
    def __init__(
        self,
        job: Job,
        store: CheckpointStore,
        stop: StopFlag,
        retry: RetryPolicy,
        options: EngineOptions,
    ):
        self.job, self.store, self.stop, self.retry, self.options = job, store, stop, retry, options
        self.log = log.bind(job=job.name)

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> Checkpoint:
        """Run the job to completion or to a clean stop; return the last saved checkpoint."""
        cp = self._acquire()
        try:
            if cp.status is Status.COMPLETED:
                self.log.info("already completed; nothing to do", counters=cp.counters, updated_at=str(cp.updated_at))
                return cp
            cp.transition(Status.RUNNING)
            self._save(cp)
            self.log.info("job started" if cp.batch_no == 0 else "job resumed", phase=cp.phase, last_id=cp.last_id, batch_no=cp.batch_no)
            with Heartbeat(self.store, cp.job_id, self.options.owner, self.options.lease_ttl_seconds, self.stop) as heartbeat:
                try:
                    self._run_phases(cp)
                except StopRequested:
                    if heartbeat.lost or self.stop.reason == LEASE_LOST:
                        raise LeaseLost(f"job {cp.job_id!r}: lease lost to another worker") from None
                    self._finish(cp, Status.INTERRUPTED)
                    self.log.info("stopped cleanly", reason=self.stop.reason, phase=cp.phase, last_id=cp.last_id, batch_no=cp.batch_no)
                    return cp
            self._finish(cp, Status.COMPLETED)
            self.log.info("job completed", batches=cp.batch_no, counters=cp.counters)
            return cp
        except LeaseLost:
            raise
        except Exception as error:
            self._record_failure(cp, error)
            raise
        finally:
            self._release(cp)

    def _run_phases(self, cp: Checkpoint) -> None:
        phases = list(self.job.phases())
        names = [p.name for p in phases]
        if cp.phase is None:
            cp.enter_phase(names[0])
        if cp.phase not in names:
            raise UnknownPhase(f"checkpoint is at phase {cp.phase!r}, which job {self.job.name!r} does not have ({', '.join(names)})")
        for phase in phases[names.index(cp.phase):]:
            if cp.phase != phase.name:
                cp.enter_phase(phase.name)
                self._save(cp)
            self._run_phase(phase, cp)

    def _run_phase(self, phase: Phase, cp: Checkpoint) -> None:
        if self.stop.requested:
            raise StopRequested(self.stop.reason or "stop")
        if isinstance(phase, Step):
            self._run_step(phase, cp)
        elif isinstance(phase, KeysetPhase):
            self._run_keyset(phase, cp)
        else:
            raise TypeError(f"phase {phase.name!r} is neither a Step nor a KeysetPhase")

    def _run_step(self, step: Step, cp: Checkpoint) -> None:
        counters = self._call(step.run, f"{step.name}")
        cp.add(counters)
        self._save(cp)
        self.log.info("phase done", phase=step.name, counters=counters)

    def _run_keyset(self, phase: KeysetPhase, cp: Checkpoint) -> None:
        resuming = cp.last_id is not None
        self._call(lambda: phase.prepare(resuming), f"{phase.name}: prepare")
        cp.phase_total = self._call(phase.count, f"{phase.name}: count")
        progress = PhaseProgress(total=cp.phase_total, done_at_start=cp.phase_done)
        after = phase.key_kind.decode(cp.last_id)
        phase_counters: Counters = {}
        self.log.info("phase started" if not resuming else "phase resumed", phase=phase.name, last_id=cp.last_id, total=cp.phase_total)
        while True:
            if self.stop.requested:
                raise StopRequested(self.stop.reason or "stop")
            limit = phase.batch_size
            rows = self._call(lambda: phase.fetch(after, limit), f"{phase.name}: fetch")
            if not rows:
                break
            increments = self._call(lambda: phase.process(rows), f"{phase.name}: process")
            from_id = cp.last_id
            after = phase.key_of(rows[-1])
            cp.last_id = phase.key_kind.encode(after)
            cp.batch_no += 1
            cp.phase_done += len(rows)
            cp.add(increments)
            add_counters(phase_counters, increments)
            self._save(cp)
            self.log.info(
                "batch",
                phase=phase.name,
                batch_no=cp.batch_no,
                batch_rows=len(rows),
                from_id=from_id,
                last_id=cp.last_id,
                **progress.snapshot(cp.phase_done).fields(),
                counters=cp.counters,
            )
            if len(rows) < limit:
                break
            self.stop.wait(self.options.sleep_between_batches)
        self._call(phase.finish, f"{phase.name}: finish")
        elapsed = progress.elapsed()
        walked = cp.phase_done - progress.done_at_start
        self.log.info(
            "phase done",
            phase=phase.name,
            rows=walked,
            elapsed=format_duration(elapsed),
            rows_per_s=round(walked / elapsed, 1) if elapsed > 0 else None,
            counters=phase_counters,
        )

    # -- checkpoint and lease ----------------------------------------------------------------

    def _acquire(self) -> Checkpoint:
        """Take the lease, waiting (stoppably) for a dead holder's lease to run out."""
        wait = self.options.lease_wait_seconds
        if wait is None:
            wait = 2 * self.options.lease_ttl_seconds + 5
        waited = 0.0
        while True:
            try:
                return self._call(
                    lambda: self.store.acquire(self.job.checkpoint_id, self.job.name, self.options.owner, self.options.lease_ttl_seconds),
                    "checkpoint: acquire lease",
                )
            except LeaseHeld as held:
                if waited >= wait or self.stop.requested:
                    raise
                if waited == 0:
                    self.log.warning("lease held by another worker; waiting for it to expire", owner=held.owner, expires_at=str(held.expires_at))
                if self.stop.wait(1.0):
                    raise
                waited += 1.0

    def _save(self, cp: Checkpoint) -> None:
        self._call(lambda: self.store.save(cp, self.options.owner, self.options.lease_ttl_seconds), "checkpoint: save")

    def _finish(self, cp: Checkpoint, status: Status) -> None:
        cp.transition(status)
        # Saved even when a stop was requested: a fresh flag keeps the stop from aborting it.
        self.retry.call(lambda: self.store.save(cp, self.options.owner, self.options.lease_ttl_seconds), what="checkpoint: final save", stop=StopFlag())

    def _record_failure(self, cp: Checkpoint, error: Exception) -> None:
        """Best effort: mark the checkpoint failed; position and counters stay as last saved."""
        if cp.status is not Status.RUNNING:
            return
        try:
            cp.transition(Status.FAILED, error=f"{type(error).__name__}: {error}")
            self.store.save(cp, self.options.owner, self.options.lease_ttl_seconds)
        except Exception as secondary:
            self.log.warning("could not mark checkpoint failed", error=f"{type(secondary).__name__}: {secondary}")

    def _release(self, cp: Checkpoint) -> None:
        try:
            self.store.release(cp.job_id, self.options.owner)
        except Exception as error:
            self.log.warning("could not release lease; it will expire", error=f"{type(error).__name__}: {error}")

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return self.retry.call(fn, what=what, stop=self.stop)
