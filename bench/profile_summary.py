"""Summarise a `bench.run --py-spy` profile: sampled seconds per thread, and its top frames.

    python -m bench.profile_summary <out>/worker-1/profile.txt [--top 8] [--rate 200]

py-spy's raw format is one line per distinct stack: `thread (tid): name;frame;frame ... count`.
"Self" is the innermost frame of each sample (where the thread was); "inclusive" counts a
sample for every frame on its stack, and is shown for the project's own functions (worker/,
utils/), which say which step of a batch the time belongs to. Samples waiting on a lock or a
socket may still count (py-spy's idle detection is a heuristic), so compare threads' shares,
not absolute CPU.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict

_THREAD = re.compile(r"^thread \(\d+\): ")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?):\d+\)$")
_NUMBERED = re.compile(r"_\d+$")
_PROJECT = ("worker/", "jobs/", "utils/")


def frame_name(frame: str) -> str:
    """`func (path/to/pkg/file.py:12)` -> `func (pkg/file.py)`: lines differ, functions count."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    return f"{match['func']} ({'/'.join(match['file'].rsplit('/', 2)[-2:])})"


def is_project(name: str) -> bool:
    return any(f"({prefix}" in name for prefix in _PROJECT)


def summarise(lines: list[str]) -> tuple[Counter, dict[str, Counter], dict[str, Counter]]:
    threads: Counter = Counter()
    own: dict[str, Counter] = defaultdict(Counter)
    inclusive: dict[str, Counter] = defaultdict(Counter)
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # writer-products_0 and writer-products_1 are one pool: add them up.
        thread = _NUMBERED.sub("", _THREAD.sub("", frames[0]))
        names = [frame_name(f) for f in frames[1:]]
        threads[thread] += int(count)
        if names:
            own[thread][names[-1]] += int(count)
        for name in set(names):
            if is_project(name):
                inclusive[thread][name] += int(count)
    return threads, own, inclusive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_summary", description=__doc__.split("\n")[0])
    parser.add_argument("profile", help="a profile.txt written by bench.run --py-spy")
    parser.add_argument("--top", type=int, default=8, help="frames shown per thread (default 8)")
    parser.add_argument("--rate", type=int, default=200, help="samples per second the profile was taken at")
    args = parser.parse_args(argv)
    with open(args.profile) as f:
        threads, own, inclusive = summarise(f.readlines())
    for thread, samples in threads.most_common():
        print(f"{thread}: {samples / args.rate:.2f} s sampled")
        for name, count in own[thread].most_common(args.top):
            print(f"    self {count / args.rate:6.2f} s  {name}")
        for name, count in inclusive[thread].most_common(args.top):
            print(f"    incl {count / args.rate:6.2f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
