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
import sys
import tempfile
from pathlib import Path
from typing import Any

from psycopg import sql

from bench.common import pg_connect
from bench.place_knowledge_data import Expected, create, write_source
from bench.jobs import finish, job_env, run_contenders
from bench.run import CpuMeter, run_measured, start_services
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
    env = job_env(services, f"pk_{name}", PLACE_KNOWLEDGE_TABLE=f"{SCHEMA}.place_knowledge", PLACE_KNOWLEDGE_STAGING=f"{SCHEMA}.pk_import")
    with pg_connect(load_settings(env), autocommit=True) as conn:
        create(conn, SCHEMA, facts, existing)
        conn.execute("CHECKPOINT")
    m = run_measured(COMMANDS[name](source), env, out / name, meter)
    if m["rc"] != 0:
        raise SystemExit(f"bench: {name} exited {m['rc']}:\n{m['stderr_tail']}")
    m["state"] = end_state(env)
    m["ok"] = m["state"] == {"rows": expected.rows, "distinct_content": expected.rows}
    m["rate"] = facts / m["wall"]
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
        results = run_contenders(
            args.contenders.split(","), lambda name: run_one(name, services, meter, source, args.facts, args.existing, expected, out), "facts"
        )
        small, small_facts = None, args.rss_facts or args.facts // 5
        if "worker" in results:
            small_expected = write_source(out / "small.jsonl", small_facts, args.existing)
            small = run_one("worker", services, meter, out / "small.jsonl", small_facts, args.existing, small_expected, out / "small")
        finish(results, "seed", small, (f"{small_facts:,} facts", f"{args.facts:,}"), out)
    finally:
        services.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
