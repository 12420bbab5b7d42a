"""Benchmark of the place_knowledge job against the seed's loop and the limit, side by side.

    .venv/bin/python -m bench.place_knowledge                       # 1,000,000 facts, 100,000 existing
    .venv/bin/python -m bench.place_knowledge --facts 100000 --existing 10000   # quick check

Each contender starts from the same fresh schema (pois, areas, existing facts) and imports the
same JSON Lines source; each runs as its own process, timed with its peak RSS:
- `worker`: `python -m worker run --job place_knowledge --source FILE`;
- `seed`: bench/place_knowledge_seed.py, the seed script's design (hash set first, chunks of 100);
- `limit`: bench/place_knowledge_limit.py, hash, index, COPY and one INSERT ... SELECT.
The end state is checked after each (rows, no repeated content). `--rss-facts N` also runs the
worker on an N-fact source, to compare its peak RSS across sizes. Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from psycopg import sql

from bench.common import pg_connect
from bench.place_knowledge_data import Expected, create, write_source
from bench.run import CpuMeter, contender_env, run_measured, start_services
from worker.config import load_settings
from worker.jobs.place_knowledge.table import hash_of

SCHEMA = "bench_pk"
COMMANDS = {
    "worker": lambda src: [sys.executable, "-m", "worker", "run", "--job", "place_knowledge", "--source", str(src)],
    "seed": lambda src: [sys.executable, "-m", "bench.place_knowledge_seed", str(src)],
    "limit": lambda src: [sys.executable, "-m", "bench.place_knowledge_limit", str(src)],
}


def end_state(env: dict[str, str]) -> dict[str, int]:
    with pg_connect(load_settings(env), autocommit=True) as conn:
        [(rows, distinct)] = conn.execute(sql.SQL("SELECT count(*), count(DISTINCT {}) FROM {}.place_knowledge p").format(
            hash_of("p"), sql.Identifier(SCHEMA)
        )).fetchall()
    return {"rows": rows, "distinct_content": distinct}


def run_one(name: str, services: Any, meter: CpuMeter, source: Path, facts: int, existing: int, expected: Expected, out: Path) -> dict[str, Any]:
    env = contender_env(services, f"bench_pk_{name}_{int(time.time())}")
    env = {k: v for k, v in env.items() if not k.startswith("TYPESENSE_")}
    env.update(PLACE_KNOWLEDGE_TABLE=f"{SCHEMA}.place_knowledge", PLACE_KNOWLEDGE_STAGING=f"{SCHEMA}.pk_import")
    with pg_connect(load_settings(env), autocommit=True) as conn:
        create(conn, SCHEMA, facts, existing)
        conn.execute("CHECKPOINT")
    m = run_measured(COMMANDS[name](source), env, out / name, meter)
    if m["rc"] != 0:
        raise SystemExit(f"bench: {name} exited {m['rc']}:\n{m['stderr_tail']}")
    m["state"] = end_state(env)
    m["ok"] = m["state"] == {"rows": expected.rows, "distinct_content": expected.rows}
    m["facts_per_s"] = facts / m["wall"]
    m.pop("stdout", None)
    return m


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.place_knowledge", description=__doc__.split("\n")[0])
    parser.add_argument("--facts", type=int, default=1_000_000)
    parser.add_argument("--existing", type=int, default=100_000)
    parser.add_argument("--rss-facts", type=int, default=None, help="also run the worker on this many facts (default facts/5)")
    parser.add_argument("--contenders", default="worker,seed,limit")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-pk-"))
    services = start_services("local")
    try:
        meter = CpuMeter(services)
        source = out / "facts.jsonl"
        expected = write_source(source, args.facts, args.existing)
        print(f"bench: {args.facts:,} facts ({expected.new:,} new, {expected.dup_in_input:,} repeated in the file,"
              f" {expected.dup_existing:,} already there, {expected.failed:,} refused), {args.existing:,} existing; logs in {out}", flush=True)
        results = {}
        for name in args.contenders.split(","):
            results[name] = m = run_one(name, services, meter, source, args.facts, args.existing, expected, out)
            print(f"bench: {name:<7} {m['wall']:8.1f} s {m['facts_per_s']:>10,.0f} facts/s  peak RSS {m['rss_mb']:7.1f} MB"
                  f"  end state {'OK' if m['ok'] else 'WRONG ' + json.dumps(m['state'])}", flush=True)
        if {"worker", "seed"} <= set(results):
            print(f"bench: worker vs seed loop: {results['seed']['wall'] / results['worker']['wall']:.2f}x faster", flush=True)
        if {"worker", "limit"} <= set(results):
            print(f"bench: worker vs limit: {results['limit']['wall'] / results['worker']['wall']:.2f} of the limit's speed", flush=True)
        if "worker" in results:
            small = args.rss_facts or args.facts // 5
            small_source = out / "small.jsonl"
            small_expected = write_source(small_source, small, args.existing)
            m = run_one("worker", services, meter, small_source, small, args.existing, small_expected, out / "small")
            print(f"bench: worker peak RSS {m['rss_mb']:.1f} MB at {small:,} facts, {results['worker']['rss_mb']:.1f} MB at {args.facts:,}", flush=True)
            results["worker_small"] = m
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    finally:
        services.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
