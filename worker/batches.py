"""One batch's writes and counters: poison rows isolated, failures recorded, counts exact.

A batch that fails because of some of its rows (a value Postgres refuses) is split in halves
until each bad row stands alone, so the rest of the batch is written and each bad row is
recorded once. Counters are the batch's pre-image counts (from the intent saved before any
write) corrected for rejected rows, plus the counts the writes themselves answered.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import structlog

from worker.checkpoint import add_counters
from worker.exceptions import SystemicBatchError
from worker.failures import FailureStore
from worker.job import BatchResult, Counters, Failure, KeysetPhase, Row

T = TypeVar("T")
Call = Callable[[Callable[[], T], str], T]
log = structlog.get_logger("worker.batches")


class BatchRunner:
    def __init__(self, job: str, failures: FailureStore, call: Call):
        self.job, self.failures, self._call = job, failures, call

    def run(self, phase: KeysetPhase, rows: Sequence[Row], pre: Counters) -> tuple[Counters, list[Failure]]:
        """Process `rows`; return the batch's counters and what was recorded as failed."""
        result, rejected = self._isolate(phase, rows)
        if rejected and len(rejected) == len(rows) > 1:
            row, error = rejected[0]
            raise SystemicBatchError(
                f"phase {phase.name}: all {len(rows)} rows of the batch failed, e.g. key {phase.key_of(row)!r}: "
                f"{type(error).__name__}: {error}"
            ) from error
        failures = result.failures + [
            Failure(key=str(phase.key_of(row)), error=f"{type(error).__name__}: {error}".strip())
            for row, error in rejected
        ]
        if failures:
            self._call(lambda: self.failures.record(self.job, phase.name, failures), "failures: record")
            log.warning("rows failed and were recorded", job=self.job, phase=phase.name, count=len(failures), first_key=failures[0].key, first_error=failures[0].error)
        counters = dict(pre)
        if rejected:  # rows never written: their pre-image is the same on every attempt
            add_counters(counters, {k: -v for k, v in phase.tally([row for row, _ in rejected]).items()})
        add_counters(counters, result.counters)
        add_counters(counters, {"failures": len(failures)})
        return counters, failures

    def _isolate(self, phase: KeysetPhase, rows: Sequence[Row]) -> tuple[BatchResult, list[tuple[Row, BaseException]]]:
        try:
            return self._call(lambda: phase.process(rows), f"{phase.name}: process"), []
        except phase.row_errors as error:
            if len(rows) == 1:
                return BatchResult(), [(rows[0], error)]
            log.info("batch refused because of some rows; splitting it", phase=phase.name, rows=len(rows), error=f"{type(error).__name__}: {error}")
        middle = len(rows) // 2
        left, left_rejected = self._isolate(phase, rows[:middle])
        right, right_rejected = self._isolate(phase, rows[middle:])
        merged = BatchResult(dict(left.counters), left.failures + right.failures)
        add_counters(merged.counters, right.counters)
        return merged, left_rejected + right_rejected
