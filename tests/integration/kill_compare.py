"""Any job, interrupted at random, must end as if it had run once without interruption.

`assert_interruptions_change_nothing` runs a job on the real servers twice from the same
starting point: once straight through, and once killed `kills` times at random moments (SIGKILL
or SIGTERM, chosen at random) and restarted after each, until it completes. The end state
(whatever `state(env)` reads: tables, documents) and the run's counters must be equal. Every
job's tests use it:

    baseline, interrupted = assert_interruptions_change_nothing(
        worker_env, ["--job", "tally", "--source", str(path)],
        prepare=lambda env: ..., state=lambda env: ..., log_dir=tmp_path,
    )

`args` name the run (`--job` and the job's flags, no command): the helper adds `run`, and
`status ... --json` to read the counters. `prepare(env)` must bring every store back to the
same starting point (drop what the job created, reload the data, clear the checkpoint
database); it is called before each of the two runs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tests.integration.inventory_data import run_worker, start_worker

State = Callable[[dict[str, str]], Any]


@dataclass
class RunOutcome:
    state: Any
    counters: dict[str, int]
    #: Worker processes started, and the signals sent ("SIGKILL after 1.23 s").
    starts: int = 0
    signals: list[str] = field(default_factory=list)
    seconds: float = 0.0


def counters_of(env: dict[str, str], args: Sequence[str]) -> tuple[str | None, dict[str, int]]:
    """The run's status and counters, as `python -m worker status --json` prints them (None and
    no counters before its checkpoint exists)."""
    result = run_worker(env, "status", *args, "--json")
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout) if result.stdout.lstrip().startswith("[") else []
    assert len(reports) <= 1, f"expected one checkpoint for {args}, got: {result.stdout}"
    return (reports[0]["status"], json.loads(reports[0]["counters"])) if reports else (None, {})


def run_to_completion(
    env: dict[str, str], args: Sequence[str], state: State, log_dir: Path, *, kills: int = 0,
    rng: random.Random | None = None, window: float = 5.0, timeout: float = 300,
) -> RunOutcome:
    """Run the job until it exits 0 with its checkpoint completed; send `kills` signals first,
    each at a random moment in (0, `window`) seconds after a start, restarting each time."""
    rng = rng or random.Random(0)
    log_dir.mkdir(parents=True, exist_ok=True)
    outcome = RunOutcome(None, {})
    started = time.monotonic()
    while True:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{args}: not completed after {timeout}s; logs in {log_dir}")
        log_path = log_dir / f"start-{outcome.starts}.log"
        proc = start_worker(env, "run", *args, log_path=log_path)
        outcome.starts += 1
        if len(outcome.signals) < kills:
            delay = rng.uniform(0.05, window)
            sig = rng.choice((signal.SIGKILL, signal.SIGTERM))
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
                outcome.signals.append(f"{sig.name} after {delay:.2f} s")
        code = proc.wait(timeout=timeout)
        # -SIGKILL: the next start takes the dead worker's lease over at once (its claim file on
        # this machine is unlocked), so no lease is waited out here.
        # -SIGTERM: the signal came before the worker installed its handlers (while Python
        # starts), so it died before doing anything, as it should.
        if code not in (0, -signal.SIGKILL, -signal.SIGTERM):
            raise AssertionError(f"{args}: worker exited {code}; log:\n{log_path.read_text()[-3000:]}")
        if code != 0:
            continue  # killed: start again (a job that completed just before its kill says so then)
        status, counters = counters_of(env, args)
        if status == "completed":
            outcome.counters = counters
            break
    outcome.seconds = time.monotonic() - started
    outcome.state = state(env)
    return outcome


def assert_interruptions_change_nothing(
    env: dict[str, str], args: Sequence[str], *, prepare: Callable[[dict[str, str]], None], state: State,
    log_dir: Path, kills: int = 4, seed: int | None = None, timeout: float = 300,
) -> tuple[RunOutcome, RunOutcome]:
    """Run straight through, then interrupted `kills` times; both must end alike."""
    seed = int(os.environ.get("KILL_SEED", seed if seed is not None else random.randrange(1 << 30)))
    prepare(env)
    baseline = run_to_completion(env, args, state, log_dir / "baseline", timeout=timeout)
    prepare(env)
    # Each kill lands in the first half of a start's life (a start resumes, so it has less to
    # do than the baseline): most kills land before the job completes.
    window = max(1.0, baseline.seconds / 2)
    interrupted = run_to_completion(
        env, args, state, log_dir / "interrupted", kills=kills, rng=random.Random(seed), window=window, timeout=timeout
    )
    where = f"(KILL_SEED={seed}; signals: {interrupted.signals}; logs in {log_dir})"
    assert interrupted.signals, f"the job completed before any signal landed {where}"
    assert interrupted.counters == baseline.counters, f"counters differ {where}"
    assert interrupted.state == baseline.state, f"end state differs {where}"
    return baseline, interrupted
