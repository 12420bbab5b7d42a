"""What the benchmarks of the Postgres-only jobs share: a contender's environment, and the
figures printed side by side at the end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.run import contender_env


def job_env(services: Any, name: str, **settings: str) -> dict[str, str]:
    """The environment of contender `name`: the servers, a MongoDB database of its own, no
    Typesense variable (the job needs none), and `settings`."""
    env = {k: v for k, v in contender_env(services, f"bench_{name}_{int(time.time())}").items() if not k.startswith("TYPESENSE_")}
    env.update(settings)
    return env


def finish(results: dict[str, dict[str, Any]], baseline: str, small: dict[str, Any] | None, sizes: tuple[str, str], out: Path) -> None:
    """Print the worker's rate against `baseline`'s and the limit's, its peak RSS at the two
    sizes (`small` is the worker's run at the smaller), and save every figure."""
    worker = results.get("worker")
    for other in (baseline, "limit"):
        if worker and other in results:
            print(f"bench: worker vs {other}: {worker['rate'] / results[other]['rate']:.2f}x its rows/s", flush=True)
    if worker and small:
        print(f"bench: worker peak RSS {small['rss_mb']:.1f} MB at {sizes[0]}, {worker['rss_mb']:.1f} MB at {sizes[1]}", flush=True)
        results["worker_small"] = small
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))


def run_contenders(names: Sequence[str], run: Callable[[str], dict[str, Any]], unit: str) -> dict[str, dict[str, Any]]:
    """Run each contender (`run(name)` returns its figures: wall, rate, rss_mb, ok, state), one
    after the other, printing a line for each."""
    results = {}
    for name in names:
        results[name] = m = run(name)
        print(f"bench: {name:<7} {m['wall']:8.1f} s {m['rate']:>10,.0f} {unit}/s  peak RSS {m['rss_mb']:7.1f} MB"
              f"  end state {'OK' if m['ok'] else 'WRONG ' + json.dumps(m['state'], default=str)}", flush=True)
    return results
