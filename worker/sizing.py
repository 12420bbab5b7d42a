"""Adaptive batch size: hold each batch near a target duration, as GitLab's batch optimizer does.

Small batches waste time on per-batch overhead (a checkpoint write, a round trip per store);
huge ones make a slow server stall the worker and make a redo after a crash expensive. The size
follows the measured throughput, smoothed, with growth capped so one fast batch cannot make the
next one enormous. Pure: no I/O, no clock; the caller passes measured durations in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: How far one adjustment may grow or shrink the size. Doubling reaches 30,000 from the usual
#: start of 1,000 in 5 batches and 35k rows; 1.5 took 9 batches and 109k rows, too small to keep
#: Typesense busy (200k-row benchmark: products phase 83,100 rows/s with 1.5, 85,199 with 2).
MAX_GROWTH = 2.0
MAX_SHRINK = 0.5
#: Weight of the newest measurement in the moving average of seconds per row.
SMOOTHING = 0.3


@dataclass
class BatchSizer:
    start: int
    minimum: int
    maximum: int
    target_seconds: float
    size: int = field(init=False)
    _seconds_per_row: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.size = self._clamp(self.start)

    def record(self, rows: int, seconds: float) -> int:
        """Take one finished batch's duration into account; return the next size."""
        if rows <= 0 or seconds <= 0:
            return self.size
        per_row = seconds / rows
        if self._seconds_per_row is None:
            self._seconds_per_row = per_row
        else:
            self._seconds_per_row += SMOOTHING * (per_row - self._seconds_per_row)
        wanted = self.target_seconds / self._seconds_per_row
        bounded = min(self.size * MAX_GROWTH, max(self.size * MAX_SHRINK, wanted))
        self.size = self._clamp(round(bounded))
        return self.size

    def _clamp(self, value: int) -> int:
        return max(self.minimum, min(self.maximum, value))


@dataclass
class PipelineShare:
    """How long each committed batch took of the pipeline's time: from its start, or from the
    commit before it when that came later. Batches overlap, so their own durations count the
    same seconds twice (a batch in a pipeline of two also waits for the other's import): sized by
    those, batches stay about half the size the target asks for (on 1M rows they lingered near
    22k for 2 s below the 30k maximum). One batch at a time, or a pause between batches, gives
    each batch's own duration."""

    _last_commit: float | None = field(default=None, init=False)

    def record(self, started: float, committed: float) -> float:
        begin = started if self._last_commit is None else max(started, self._last_commit)
        self._last_commit = committed
        return committed - begin
