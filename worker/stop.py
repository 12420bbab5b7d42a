"""Cooperative stopping: signals only set a flag; the engine stops at the next batch boundary.

Raising from a signal handler could land in the middle of a Postgres or MongoDB write, so the
handler never raises. The first SIGTERM/SIGINT asks for a clean stop and arms a watchdog; if the
batch in flight has not finished when the watchdog fires (or a second signal arrives), the
process exits at once. That is safe because the checkpoint only ever covers batches whose writes
finished, and an abandoned batch is redone idempotently on the next start.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable


class StopRequested(Exception):
    """Raised by `StopFlag.sleep` so a retry backoff or throttle wait ends when asked to stop."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"stop requested ({reason})")


class StopFlag:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; return True at once if a stop is (or becomes) requested."""
        return self._event.wait(max(0.0, seconds))

    def sleep(self, seconds: float) -> None:
        if self.wait(seconds):
            raise StopRequested(self.reason or "stop")


#: SIGTERM/SIGINT received before `install_signal_handlers`, by name.
_early: list[str] = []


def catch_early_signals() -> None:
    """Note SIGTERM/SIGINT until `install_signal_handlers` takes over, which then treats them
    as if they had come just then. The first thing `python -m worker` does.

    Python runs no code of ours while it starts (tens of milliseconds), so the image starts
    the worker with both signals blocked (`env --block-signal`, see the Dockerfile): one sent
    then waits, pending, and is delivered here, once the note is in place."""

    def note(signum: int, _frame: object) -> None:
        _early.append(signal.Signals(signum).name)

    stops = {signal.SIGTERM, signal.SIGINT}
    for signum in stops:
        signal.signal(signum, note)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


def install_signal_handlers(
    flag: StopFlag,
    timeout_seconds: float,
    force_exit: Callable[[str], None],
) -> None:
    """SIGTERM/SIGINT: request a stop and arm the watchdog; a second signal forces the exit.
    Signals noted by `catch_early_signals` are handled now, in the order they came."""

    def handle(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if flag.requested:
            force_exit(f"second signal {name}")
            return
        flag.request(name)
        watchdog = threading.Timer(
            timeout_seconds, force_exit, args=(f"batch in flight did not finish within {timeout_seconds}s",)
        )
        watchdog.daemon = True
        watchdog.start()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    while _early:
        handle(signal.Signals[_early.pop(0)], None)
