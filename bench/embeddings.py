"""Benchmark of the embeddings job against the seed's loop and the provider alone.

    .venv/bin/python -m bench.embeddings                       # 20,000 jobs, the local model
    .venv/bin/python -m bench.embeddings --jobs 2000           # quick check
    .venv/bin/python -m bench.embeddings --latency-ms 300      # as if the provider were remote

Every contender starts from a fresh schema of seed 003's tables in the seed's state
(worker.demo_embeddings: 90% active, a fifth of those embedded already) and talks to the
project's model server (all-MiniLM-L6-v2, numpy), started here; with `--latency-ms`, through a
proxy that adds that round trip to every request. Contenders, each its own process:
- `provider`: bench/embeddings_provider.py, the same texts in requests of `--batch` with the
  best concurrency of 1, 2, 4 and 8 (tried first on `--probe` texts);
- `worker`: `python -m worker run --job embeddings` with that batch size and concurrency;
- `seed`: bench/embeddings_seed.py, 50 per request, one request at a time, one UPDATE per row.
Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pymongo

from bench.common import parse_result, pg_connect
from bench.jobs import job_env
from bench.run import CpuMeter, run_measured, start_services, worker_phases
from tests.integration.fault_proxy import FaultProxy
from tests.servers import ModelServer
from worker import tables
from worker.config import load_settings
from worker.demo_embeddings import load_seed_state

SCHEMA = "bench_embeddings"


def create(env: dict[str, str], jobs: int, words: int) -> int:
    """Fresh tables in the seed's state; the active jobs without an embedding."""
    with pg_connect(load_settings(env), autocommit=True) as conn:
        tables.fresh_schema(conn, SCHEMA, "embeddings")
        state = load_seed_state(conn, jobs, words=words)
        conn.execute("VACUUM ANALYZE")
    with pymongo.MongoClient(env["MONGO_URI"]) as client:
        client.drop_database(env["MONGO_DB_NAME"])
    return state.active - state.embedded


def embedded_now(env: dict[str, str]) -> int:
    with pg_connect(load_settings(env), autocommit=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {SCHEMA}.jobs WHERE is_active AND embedding IS NOT NULL").fetchone()[0]


def run_one(name: str, cmd: list[str], env: dict[str, str], args: argparse.Namespace, meter: CpuMeter, out: Path) -> dict[str, Any]:
    todo = create(env, args.jobs, args.words)
    m = run_measured(cmd, env, out / name, meter)
    if m["rc"] != 0:
        raise SystemExit(f"bench: {name} exited {m['rc']}:\n{m['stderr_tail']}")
    if name == "worker":
        phases = worker_phases(m["stdout"])
        m["seconds"] = phases["span:embed"]
        m["embedded"] = phases["counters"]["embedded"]
        m["phases"] = {k.removeprefix("span:"): round(v, 2) for k, v in phases.items() if k.startswith("span:")}
    else:
        m.update(parse_result(m["stdout"]))
    m["todo"], m["rate"] = todo, m["embedded"] / m["seconds"]
    m.pop("stdout", None)
    print(f"bench: {name:<9} {m['embedded']:>6} jobs in {m['seconds']:7.1f} s: {m['rate']:6.1f} jobs/s  (process wall {m['wall']:.1f} s,"
          f" peak RSS {m['rss_mb']:.1f} MB){'  ' + json.dumps(m.get('phases')) if 'phases' in m else ''}", flush=True)
    return m


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.embeddings", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--words", type=int, default=24, help="words per description")
    parser.add_argument("--batch", type=int, default=50, help="texts per request (the seed's 50)")
    parser.add_argument("--probe", type=int, default=1000, help="texts the concurrency search sends")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-embeddings-"))
    services = start_services("local")
    model = ModelServer(out / "model-server")
    proxy = None
    try:
        model.start()
        url = model.url
        if args.latency_ms:
            proxy = FaultProxy(model.url, latency=args.latency_ms / 1000).start()
            url = proxy.url
        meter = CpuMeter(services)
        env = job_env(services, "embeddings", EMBEDDING_URL=url, EMBEDDING_JOBS_TABLE=f"{SCHEMA}.jobs",
                      EMBEDDING_QUEUE_TABLE=f"{SCHEMA}.embedding_queue", EMBEDDING_BATCH_SIZE=str(args.batch), LOG_FORMAT="json")
        print(f"bench: {args.jobs:,} jobs, descriptions of {args.words} words, {args.batch} texts per request,"
              f" added latency {args.latency_ms:.0f} ms; logs in {out}", flush=True)
        probes = {c: run_one(f"probe_c{c}", [sys.executable, "-m", "bench.embeddings_provider", str(args.batch), str(c), str(args.probe)], env, args, meter, out)
                  for c in (1, 2, 4, 8)}
        best = max(probes, key=lambda c: probes[c]["rate"])
        print(f"bench: best concurrency {best}", flush=True)
        results = {
            "provider": run_one("provider", [sys.executable, "-m", "bench.embeddings_provider", str(args.batch), str(best)], env, args, meter, out),
            "worker": run_one("worker", [sys.executable, "-m", "worker", "run", "--job", "embeddings"], {**env, "EMBEDDING_CONCURRENCY": str(best)}, args, meter, out),
            "seed": run_one("seed", [sys.executable, "-m", "bench.embeddings_seed"], env, args, meter, out),
        }
        w, p, s = results["worker"], results["provider"], results["seed"]
        print(f"bench: worker {w['rate']:.1f} jobs/s = {w['rate'] / p['rate']:.2f}x the provider alone ({p['rate']:.1f}),"
              f" {w['rate'] / s['rate']:.1f}x the seed's loop ({s['rate']:.1f}); the seed reported 14.7", flush=True)
        (out / "results.json").write_text(json.dumps({"probes": probes, **results, "best_concurrency": best}, indent=2, default=str))
    finally:
        if proxy:
            proxy.stop()
        model.stop()
        services.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
