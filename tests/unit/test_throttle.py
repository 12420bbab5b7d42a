import threading

import httpx
import pytest

from worker.stop import StopFlag, StopRequested
from worker.throttle import UNKNOWN_LIMIT, Kind, Signal, Throttler


class Scripted:
    """An indicator that answers from a script, then NORMAL forever."""

    def __init__(self, name, *answers):
        self.name = name
        self.answers = list(answers)
        self.calls = 0

    def evaluate(self):
        self.calls += 1
        if not self.answers:
            return Signal(Kind.NORMAL)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_pauses_while_an_indicator_says_stop_and_resumes_after(monkeypatch):
    monkeypatch.setattr("worker.throttle.PAUSED_RECHECK_SECONDS", 0.01)
    busy = Scripted("postgres", Signal(Kind.STOP, "postgres active=60>50"), Signal(Kind.STOP, "postgres active=55>50"))
    throttler = Throttler([busy, Scripted("typesense")], StopFlag(), check_seconds=0)
    throttler.wait_until_healthy()
    assert busy.calls == 3, "checked until it answered NORMAL"
    assert throttler.paused_seconds > 0


def test_checks_at_most_every_check_seconds():
    clock = Clock()
    indicator = Scripted("postgres")
    throttler = Throttler([indicator], StopFlag(), check_seconds=5, clock=clock)
    throttler.wait_until_healthy()
    clock.now = 4.0
    throttler.wait_until_healthy()
    assert indicator.calls == 1
    clock.now = 5.5
    throttler.wait_until_healthy()
    assert indicator.calls == 2


def test_a_stop_request_ends_a_pause():
    stop = StopFlag()
    forever = Scripted("typesense", *[Signal(Kind.STOP, "typesense unhealthy")] * 1000)
    throttler = Throttler([forever], stop, check_seconds=0)
    threading.Timer(0.2, stop.request, args=("SIGTERM",)).start()
    with pytest.raises(StopRequested):
        throttler.wait_until_healthy()


def test_a_failing_health_check_is_tolerated_a_few_times_then_counts_as_stop(monkeypatch):
    monkeypatch.setattr("worker.throttle.PAUSED_RECHECK_SECONDS", 0.01)
    errors = [httpx.ConnectError("refused")] * UNKNOWN_LIMIT
    flaky = Scripted("typesense", *errors)
    throttler = Throttler([flaky], StopFlag(), check_seconds=0)
    for _ in range(UNKNOWN_LIMIT - 1):
        throttler.wait_until_healthy()
    assert throttler.paused_seconds == 0
    throttler.wait_until_healthy()  # the third unknown in a row pauses until it answers again
    assert throttler.paused_seconds > 0
