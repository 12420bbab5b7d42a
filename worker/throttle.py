"""Back off when the servers are busy: indicators give signals, the throttler decides and waits.

Each indicator reads one health figure and answers STOP (with a short reason such as
`postgres active=57>50`) or NORMAL. The throttler asks them before each batch (at most every
`check_seconds`), and while any says STOP it pauses, re-checking, and logs when and why it
paused and for how long. An indicator that cannot answer counts as UNKNOWN; several in a row
count as STOP, since a server that cannot report its health is not one to push harder.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import httpx
import psycopg
import structlog

from utils.pg import Postgres
from utils.typesense import TypesenseIndex
from worker.stop import StopFlag

log = structlog.get_logger("worker.throttle")

#: Consecutive UNKNOWN answers from one indicator that count as STOP.
UNKNOWN_LIMIT = 3
#: Seconds between re-checks while paused.
PAUSED_RECHECK_SECONDS = 1.0


class Kind(enum.Enum):
    NORMAL = "normal"
    STOP = "stop"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Signal:
    kind: Kind
    reason: str = ""


class Indicator(Protocol):
    name: str

    def evaluate(self) -> Signal: ...


class PostgresActivity:
    """Active queries on the server, and replication lag of its replicas."""

    name = "postgres"

    def __init__(self, pg: Postgres, max_active: int, max_lag_seconds: float):
        self.pg, self.max_active, self.max_lag = pg, max_active, max_lag_seconds

    def evaluate(self) -> Signal:
        with self.pg.connection().cursor() as cur:
            cur.execute(
                "SELECT (SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()),"
                " (SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) FROM pg_stat_replication)"
            )
            active, lag = cur.fetchone()
        if active > self.max_active:
            return Signal(Kind.STOP, f"postgres active={active}>{self.max_active}")
        if lag > self.max_lag:
            return Signal(Kind.STOP, f"postgres replication_lag={float(lag):.1f}s>{self.max_lag}s")
        return Signal(Kind.NORMAL)


class TypesenseHealth:
    """Typesense's own health (it reports memory and disk trouble there) and its write backlog."""

    name = "typesense"

    def __init__(self, index: TypesenseIndex, max_pending_writes: int):
        self.index, self.max_pending = index, max_pending_writes

    def evaluate(self) -> Signal:
        health = self.index.health_report()
        if not health.get("ok"):
            return Signal(Kind.STOP, f"typesense unhealthy {health.get('resource_error') or health}")
        pending = int(self.index.stats().get("pending_write_batches", 0))
        if pending > self.max_pending:
            return Signal(Kind.STOP, f"typesense pending_write_batches={pending}>{self.max_pending}")
        return Signal(Kind.NORMAL)


class Throttler:
    def __init__(
        self,
        indicators: Sequence[Indicator],
        stop: StopFlag,
        check_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.indicators, self.stop, self.check_seconds, self.clock = indicators, stop, check_seconds, clock
        self._last_check: float | None = None
        self._unknowns = {i.name: 0 for i in indicators}
        self.paused_seconds = 0.0

    def wait_until_healthy(self) -> None:
        """Return at once when healthy (or checked recently); else pause until healthy or stopped."""
        now = self.clock()
        if self._last_check is not None and now - self._last_check < self.check_seconds:
            return
        self._last_check = now
        reasons = self._reasons()
        if not reasons:
            return
        started = now
        log.warning("throttled", reasons=reasons)
        while reasons:
            self.stop.sleep(PAUSED_RECHECK_SECONDS)
            changed = self._reasons()
            if changed and changed != reasons:
                log.warning("still throttled", reasons=changed)
            reasons = changed
        paused = self.clock() - started
        self.paused_seconds += paused
        self._last_check = self.clock()
        log.info("throttle lifted", paused_s=round(paused, 1))

    def _reasons(self) -> list[str]:
        reasons = []
        for indicator in self.indicators:
            signal = self._evaluate(indicator)
            if signal.kind is Kind.STOP:
                reasons.append(signal.reason)
        return reasons

    def _evaluate(self, indicator: Indicator) -> Signal:
        try:
            signal = indicator.evaluate()
        except (psycopg.Error, httpx.HTTPError, OSError, ValueError) as error:
            signal = Signal(Kind.UNKNOWN, f"{indicator.name} health unknown: {type(error).__name__}: {error}")
        if signal.kind is not Kind.UNKNOWN:
            self._unknowns[indicator.name] = 0
            return signal
        self._unknowns[indicator.name] += 1
        if self._unknowns[indicator.name] >= UNKNOWN_LIMIT:
            return Signal(Kind.STOP, signal.reason)
        log.info("health check failed", indicator=indicator.name, reason=signal.reason)
        return Signal(Kind.NORMAL)
