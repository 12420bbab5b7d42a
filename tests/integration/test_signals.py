"""A stop at any instant of a worker's life, start-up included, ends it cleanly: exit 0 and a
log line saying where it stopped, and nothing lost (the runs that follow finish the job exactly).

The worker is started the way the image starts it: with SIGTERM and SIGINT blocked until its
first line has a handler in place (the Dockerfile's `env --block-signal`; here the mask is set
between fork and exec, which leaves no gap at all)."""

from __future__ import annotations

import json
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.inventory_data import (
    NO_DOTENV,
    assert_backfilled,
    checkpoint,
    child_env,
    events,
    load,
    make_dataset,
    run_worker,
    worker_command,
)

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"
STOPS = {signal.SIGTERM, signal.SIGINT}
#: What the worker says when it stops, wherever the stop finds it.
STOPPED = (
    "stopped during start-up, before any connection; nothing was done",
    "stopped before the run started; nothing was done",
    "stopped while waiting for the lease; nothing was done",
    "stopped cleanly",
)


def start_blocked(env: dict[str, str], log: Path) -> subprocess.Popen:
    """The worker, started with SIGTERM and SIGINT blocked from its first instant."""
    with open(log, "w") as out:
        return subprocess.Popen(
            worker_command(), cwd=NO_DOTENV, env=child_env(env), stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, STOPS),
        )


def test_a_sigterm_at_any_instant_of_the_first_two_seconds_exits_0_with_a_log_line(worker_env, tmp_path):
    env = {**worker_env, "BATCH_SIZE": "20", "BATCH_SIZE_MAX": "20", "SLEEP_BETWEEN_BATCHES": "0.2"}
    data = make_dataset(1000)
    load(env, data)
    instants = [0.0] + sorted(random.uniform(0, 2) for _ in range(9))
    outcomes = []
    for n, instant in enumerate(instants):
        log = tmp_path / f"worker-{n}.log"
        worker = start_blocked(env, log)
        time.sleep(instant)
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
        output = log.read_text()
        said = [e["event"] for e in events(output) if e.get("event") in STOPPED]
        outcomes.append((round(instant, 3), code, said))
        assert code == 0 and len(said) == 1, (instant, output[-3000:])
    print(json.dumps(outcomes))

    finished = run_worker({**env, "SLEEP_BETWEEN_BATCHES": "0", "BATCH_SIZE_MAX": "1000"})
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert_backfilled(env, data)
    assert checkpoint(env)["counters"] == data.expected_counters()


def test_the_image_starts_the_worker_with_its_stop_signals_blocked():
    cmd = json.loads(next(line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD "))[4:])
    python = cmd.index("python")
    assert cmd[python:] == ["python", "-m", "worker"], cmd
    probe = "import signal; print(sorted(s.name for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])))"
    shown = subprocess.run([*cmd[:python], sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert {"SIGINT", "SIGTERM"} <= set(json.loads(shown.stdout.replace("'", '"'))), f"{shlex.join(cmd)}: {shown.stdout}"
