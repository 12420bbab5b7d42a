"""How long the worker takes to start: from exec to SIGTERM being caught, and to `--help`
printed (every import done). Side by side with another checkout, in turns, when given one.

    python -m bench.start [-n 20] [--against DIR]

"Caught" is read from outside, as the kernel sees it: the SigCgt mask of /proc/<pid>/status,
polled until SIGTERM's bit is set. The worker runs `run` against a Postgres port nothing
listens on, so it stays alive (retrying) long enough to be read, and is then killed.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
#: Nothing listens on port 9 (discard) here: the worker retries its connection until killed.
UNREACHABLE = {"DB_HOST": "127.0.0.1", "DB_PORT": "9", "TYPESENSE_API_KEY": "bench", "MONGO_URI": "mongodb://127.0.0.1:9"}


def caught(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & SIGTERM_BIT)
    return False


def time_to_catch(checkout: Path, cwd: str) -> float:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(checkout), **UNREACHABLE}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "worker", "run"], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not caught(proc.pid):
            if proc.poll() is not None:
                raise RuntimeError(f"{checkout}: the worker exited ({proc.returncode}) before catching SIGTERM")
            time.sleep(0.0002)
        return time.perf_counter() - started
    finally:
        proc.kill()
        proc.wait()


def time_to_help(checkout: Path, cwd: str) -> float:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(checkout)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "worker", "--help"], cwd=cwd, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="runs of each measurement per checkout")
    parser.add_argument("--against", type=Path, help="another checkout, measured in turns with this one")
    args = parser.parse_args()
    checkouts = [REPO] + ([args.against.resolve()] if args.against else [])
    figures: dict[tuple[Path, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as cwd:  # no `.env` of the developer's
        for _ in range(args.n):
            for checkout in checkouts:
                for name, measure in (("SIGTERM caught", time_to_catch), ("--help done", time_to_help)):
                    figures.setdefault((checkout, name), []).append(measure(checkout, cwd))
    for (checkout, name), values in figures.items():
        print(f"{str(checkout):40} {name:15} median {statistics.median(values) * 1000:7.1f} ms  (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}, n={len(values)})")
    if args.against:
        for name in ("SIGTERM caught", "--help done"):
            pairs = zip(figures[(REPO, name)], figures[(checkouts[1], name)])
            print(f"{name}: this / against, median of pairs: {statistics.median(a / b for a, b in pairs):.3f}")


if __name__ == "__main__":
    main()
