"""Rate and ETA for the log line: what an operator tailing `docker compose logs` needs to see.

The rate is measured over this run only (rows done since the process started the phase), so a
resumed phase does not claim the speed of the rows a previous run did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Snapshot:
    done: int
    total: int | None
    rows_per_s: float
    eta_s: float | None

    @property
    def percent(self) -> float | None:
        if not self.total:
            return None
        return round(min(100.0, 100.0 * self.done / self.total), 2)

    def fields(self) -> dict[str, object]:
        return {
            "done": self.done,
            "total": self.total,
            "percent": self.percent,
            "rows_per_s": round(self.rows_per_s, 1),
            "eta": format_duration(self.eta_s),
        }


@dataclass
class PhaseProgress:
    total: int | None
    done_at_start: int
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def snapshot(self, done: int) -> Snapshot:
        elapsed = self.clock() - self.started
        rate = (done - self.done_at_start) / elapsed if elapsed > 0 else 0.0
        eta = None
        if self.total is not None and rate > 0:
            eta = max(0.0, (self.total - done) / rate)
        return Snapshot(done=done, total=self.total, rows_per_s=rate, eta_s=eta)

    def elapsed(self) -> float:
        return self.clock() - self.started


def format_duration(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `12s`, or `n/a` when unknown."""
    if seconds is None:
        return "n/a"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
