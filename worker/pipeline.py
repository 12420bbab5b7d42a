"""One keyset phase, pipelined: the next pages are read while earlier batches are written.

A reader thread fetches pages ahead into a bounded queue; up to `depth` batches are written at
once by a small thread pool (a batch's Postgres update overlaps another batch's index import);
the checkpoint advances only over finished batches, in key order, so a crash still means
"redo from the checkpoint". Each batch's intent (range, row count, pre-image counts) is saved
before its writes start; after a crash the interrupted batches are re-read with the same sizes
and reuse their intents' counts, so counters stay exact.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import structlog

from worker.batches import BatchRunner
from worker.checkpoint import Checkpoint, add_counters
from worker.exceptions import LeaseLost
from worker.job import Counters, KeysetPhase, Row, is_last_page
from worker.lease import LEASE_LOST
from worker.progress import PhaseProgress, format_duration
from worker.sizing import BatchSizer, PipelineShare
from worker.stop import StopFlag, StopRequested
from worker.throttle import Throttler

T = TypeVar("T")
Call = Callable[[Callable[[], T], str], T]
Intent = dict[str, Any]
log = structlog.get_logger("worker.pipeline")

_END = object()
#: How often a blocked reader looks up to see whether the pipeline was torn down.
_QUEUE_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class PipelineOptions:
    depth: int = 2
    sleep_between_batches: float = 0.0
    batch_size_min: int = 100
    batch_size_max: int = 100_000
    batch_target_seconds: float = 2.0


@dataclass
class _Page:
    rows: Sequence[Row]
    #: The intent of the interrupted batch this page re-reads, if any.
    redo: Intent | None


class _Reader(threading.Thread):
    """Fetches pages ahead: first one per interrupted batch (same sizes), then sized by the sizer."""

    def __init__(self, phase: KeysetPhase, after: Any, redo: list[Intent], sizer: BatchSizer, call: Call):
        super().__init__(name=f"reader-{phase.name}", daemon=True)
        self.phase, self.after, self.redo, self.sizer, self.call = phase, after, redo, sizer, call
        self.pages: queue.Queue = queue.Queue(maxsize=2)
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            plan = iter(self.redo)
            after = self.after
            while not self.halt.is_set():
                redo = next(plan, None)
                limit = redo["rows"] if redo else self.sizer.size
                rows = self.call(lambda: self.phase.fetch(after, limit), f"{self.phase.name}: fetch")
                if rows:
                    self._put(_Page(rows, redo))
                if is_last_page(rows, limit):
                    break
                after = self.phase.last_key(rows)
            self._put(_END)
        except BaseException as error:  # handed to the main thread, which raises it
            self._put(error)

    def _put(self, item: object) -> None:
        while not self.halt.is_set():
            try:
                self.pages.put(item, timeout=_QUEUE_POLL_SECONDS)
                return
            except queue.Full:
                continue


class KeysetPipeline:
    def __init__(
        self,
        job: str,
        batches: BatchRunner,
        call: Call,
        save: Callable[[Checkpoint], None],
        stop: StopFlag,
        throttler: Throttler,
        options: PipelineOptions,
    ):
        self.job, self.batches, self.call, self.save = job, batches, call, save
        self.stop, self.throttler, self.options = stop, throttler, options
        self.log = log.bind(job=job)

    def run(self, phase: KeysetPhase, cp: Checkpoint, prepared: Future | None = None) -> Counters:
        """Walk the phase from the checkpoint to the end; return the counters this run added.
        `prepared`: a fresh `prepare` already started in the background (see prepare_early)."""
        redo = _interrupted_batches(phase, cp)
        resuming = cp.last_id is not None or bool(redo)
        if prepared is not None and not resuming:
            prepared.result()
        else:
            self.call(lambda: phase.prepare(resuming), f"{phase.name}: prepare")
        cp.phase_total = self.call(phase.count, f"{phase.name}: count")
        progress = PhaseProgress(total=cp.phase_total, done_at_start=cp.phase_done)
        o = self.options
        start = phase.batch_size  # the configured size is where adapting starts, within the bounds
        smallest = phase.batch_size_min if phase.batch_size_min is not None else min(o.batch_size_min, start)
        sizer = BatchSizer(start, smallest, max(o.batch_size_max, start), o.batch_target_seconds)
        share = PipelineShare()
        self.log.info("phase resumed" if resuming else "phase started", phase=phase.name, last_id=cp.last_id, total=cp.phase_total, redo_batches=len(redo))
        reader = _Reader(phase, phase.key_kind.decode(cp.last_id), redo, sizer, self.call)
        added: Counters = {}
        in_flight: deque[tuple[Intent, Future]] = deque()
        next_from = cp.last_id
        reading = True
        # A pause between batches asks for one batch at a time: the pause comes after a commit.
        depth = 1 if o.sleep_between_batches > 0 else o.depth
        started_any = False
        reader.start()
        with ThreadPoolExecutor(max_workers=depth, thread_name_prefix=f"writer-{phase.name}") as pool:
            try:
                while True:
                    while reading and len(in_flight) < depth and not self.stop.requested:
                        if started_any and o.sleep_between_batches > 0 and self.stop.wait(o.sleep_between_batches):
                            break
                        self.throttler.wait_until_healthy()
                        page = reader.pages.get()
                        if page is _END:
                            reading = False
                            break
                        if isinstance(page, BaseException):
                            raise page
                        intent = self._begin(phase, cp, page, next_from)
                        next_from = intent["to_id"]
                        started_any = True
                        in_flight.append((intent, pool.submit(self._run_batch, phase, page.rows, intent["pre"])))
                    if not in_flight:
                        break
                    intent, future = in_flight.popleft()
                    counters, started = future.result()
                    self._commit(phase, cp, intent, counters, progress)
                    add_counters(added, counters)
                    sizer.record(intent["rows"], share.record(started, time.monotonic()))
                if reading:
                    raise StopRequested(self.stop.reason or "stop")
            except BaseException as error:
                # Batches still in flight must not retry for minutes: their intents are saved,
                # so the next start redoes them. After a refused save they must not write either.
                self.stop.request(LEASE_LOST if isinstance(error, LeaseLost) else "error")
                raise
            finally:
                reader.halt.set()
        self.call(phase.finish, f"{phase.name}: finish")
        self._log_phase_done(phase, cp, progress, added)
        return added

    def _run_batch(self, phase: KeysetPhase, rows: Sequence[Row], pre: Counters) -> tuple[Counters, float]:
        """The batch's counters, and when it started (for PipelineShare)."""
        started = time.monotonic()
        counters, _ = self.batches.run(phase, rows, dict(pre))
        return counters, started

    def _begin(self, phase: KeysetPhase, cp: Checkpoint, page: _Page, from_id: Any) -> Intent:
        """The batch's intent: the interrupted batch's own when this page re-reads it unchanged,
        else a new one, saved before any write."""
        to_id = phase.key_kind.encode(phase.last_key(page.rows))
        redo = page.redo if page.redo is not None and any(page.redo is i for i in cp.intents) else None
        if redo is not None:
            if (redo["from_id"], redo["to_id"], redo["rows"]) == (from_id, to_id, len(page.rows)):
                self.log.info("redoing a batch interrupted before its checkpoint", phase=phase.name, from_id=from_id, to_id=to_id)
                return redo
            self.log.warning("rows changed since the interrupted batches; counting them afresh", phase=phase.name, from_id=from_id)
            # This intent and the interrupted ones after it are stale; earlier ones are in flight.
            at = next(k for k, i in enumerate(cp.intents) if i is redo)
            cp.intents = cp.intents[:at] + [i for i in cp.intents[at + 1 :] if i["phase"] != phase.name]
        pre = phase.tally(page.rows)
        if phase.scanned_counter:
            add_counters(pre, {phase.scanned_counter: len(page.rows)})
        intent = {"phase": phase.name, "from_id": from_id, "to_id": to_id, "rows": len(page.rows), "pre": pre}
        cp.intents.append(intent)
        self.save(cp)
        return intent

    def _commit(self, phase: KeysetPhase, cp: Checkpoint, intent: Intent, counters: Counters, progress: PhaseProgress) -> None:
        from_id, rows = cp.last_id, intent["rows"]
        cp.intents = [i for i in cp.intents if i is not intent]
        cp.last_id = intent["to_id"]
        cp.batch_no += 1
        cp.phase_done += rows
        cp.add(counters)
        self.save(cp)
        self.log.info(
            "batch",
            phase=phase.name,
            batch_no=cp.batch_no,
            batch_rows=rows,
            from_id=from_id,
            last_id=cp.last_id,
            **progress.snapshot(cp.phase_done).fields(),
            counters=cp.counters,
        )

    def _log_phase_done(self, phase: KeysetPhase, cp: Checkpoint, progress: PhaseProgress, added: Counters) -> None:
        elapsed = progress.elapsed()
        walked = cp.phase_done - progress.done_at_start
        self.log.info(
            "phase done",
            phase=phase.name,
            rows=walked,
            elapsed=format_duration(elapsed),
            rows_per_s=round(walked / elapsed, 1) if elapsed > 0 else None,
            throttled_s=round(self.throttler.paused_seconds, 1),
            counters=added,
        )


def _interrupted_batches(phase: KeysetPhase, cp: Checkpoint) -> list[Intent]:
    """Intents of this phase that chain on from the checkpoint, in key order; others are dropped."""
    by_from = {i["from_id"]: i for i in cp.intents if i["phase"] == phase.name}
    chain, expected = [], cp.last_id
    while expected in by_from:
        intent = by_from.pop(expected)
        chain.append(intent)
        expected = intent["to_id"]
    cp.intents = [i for i in cp.intents if i["phase"] != phase.name or any(i is c for c in chain)]
    return chain

