"""Benchmark of the codes_import job against the seed's scripts and the staging limit.

    .venv/bin/python -m bench.codes_import                  # 1,000,000 codes in 8 files, 1,000,000 existing
    .venv/bin/python -m bench.codes_import --rows 100000    # quick check

The files (worker.demo_codes.generate: both header variants, files without `serial`,
28% of the codes already in the table, 2% repeated within the files) are written once; each
contender starts from a fresh schema of seed 002's tables holding the existing codes, and runs
as its own process, timed with its peak RSS:
- `worker`: `python -m worker run --job codes_import --source DIR`, phase by phase from its log;
- `seed`: bench/codes_import_seed.py, the seed's scripts (row-by-row staging, the marking
  function, the single-transaction insert);
- `limit`: bench/codes_import_limit.py, the raw files COPYed into an unlogged table: the limit
  for staging alone; `logged`: the same into a logged table (what the write-ahead log costs).
The worker runs again at a fifth of the rows for its peak RSS. The end state is checked after
worker and seed (the codes there, the import's row). Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import parse_result, pg_connect
from bench.jobs import job_env
from bench.run import CpuMeter, run_measured, start_services, worker_phases
from worker import tables
from worker.config import load_settings
from worker.demo_codes import add_existing, generate

SCHEMA = "bench_codes"
FILES = 8


def create(env: dict[str, str], existing: int) -> None:
    with pg_connect(load_settings(env), autocommit=True) as conn:
        tables.fresh_schema(conn, SCHEMA, "codes_import")
        add_existing(conn, existing)
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def end_state(env: dict[str, str]) -> dict[str, Any]:
    with pg_connect(load_settings(env), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}")
        [(codes, stamped)] = conn.execute("SELECT count(*), count(import_job_id) FROM codes").fetchall()
        jobs = conn.execute("SELECT status, codes_inserted FROM codes_import_jobs").fetchall()
    return {"codes": codes, "stamped": stamped, "jobs": jobs}


def run_one(name: str, services: Any, meter: CpuMeter, folder: Path, rows: int, existing: int, clean: int, out: Path) -> dict[str, Any]:
    env = job_env(
        services, f"codes_{name}", CODES_TABLE=f"{SCHEMA}.codes", CODES_IMPORT_JOBS_TABLE=f"{SCHEMA}.codes_import_jobs",
        CODES_IMPORT_STAGING=f"{SCHEMA}.codes_import", LOG_FORMAT="json",
    )
    create(env, existing)
    cmd = {
        "worker": [sys.executable, "-m", "worker", "run", "--job", "codes_import", "--source", str(folder)],
        "seed": [sys.executable, "-m", "bench.codes_import_seed", str(folder)],
        "limit": [sys.executable, "-m", "bench.codes_import_limit", str(folder)],
        "logged": [sys.executable, "-m", "bench.codes_import_limit", str(folder), "logged"],
    }[name]
    m = run_measured(cmd, env, out / name, meter)
    if m["rc"] != 0:
        raise SystemExit(f"bench: {name} exited {m['rc']}:\n{m['stderr_tail']}")
    m["rows"], m["rate"] = rows, rows / m["wall"]
    if name == "worker":
        m["phases"] = {k.removeprefix("span:"): v for k, v in worker_phases(m["stdout"]).items() if k.startswith("span:")}
    else:
        m["phases"] = parse_result(m["stdout"])["seconds"]
    if name in ("worker", "seed"):
        m["state"] = end_state(env)
        m["ok"] = m["state"] == {"codes": existing + clean, "stamped": clean, "jobs": [("completed", clean)]}
    m.pop("stdout", None)
    phases = "  ".join(f"{p} {s:.1f} s" for p, s in m["phases"].items())
    print(f"bench: {name:<7} {m['wall']:7.1f} s  {m['rate']:>9,.0f} rows/s  peak RSS {m['rss_mb']:6.1f} MB  {phases}"
          f"{'  end state ' + ('OK' if m['ok'] else 'WRONG ' + json.dumps(m['state'], default=str)) if 'ok' in m else ''}", flush=True)
    return m


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.codes_import", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--existing", type=int, default=1_000_000)
    parser.add_argument("--contenders", default="worker,seed,limit,logged")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-codes-"))
    data = generate(out / "files", args.rows, FILES, args.existing)
    small = generate(out / "files_small", args.rows // 5, FILES, args.existing)
    services = start_services("local")
    try:
        meter = CpuMeter(services)
        print(f"bench: {args.rows:,} codes in {FILES} files against {args.existing:,} existing ({data.truth}); logs in {out}", flush=True)
        results = {
            name: run_one(name, services, meter, out / "files", args.rows, args.existing, len(data.clean), out)
            for name in args.contenders.split(",")
        }
        if "worker" in results:
            results["worker_small"] = run_one("worker", services, meter, out / "files_small", args.rows // 5, args.existing, len(small.clean), out / "small")
        report(results, args.rows)
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    finally:
        services.stop()
    return 0


def report(results: dict[str, dict[str, Any]], rows: int) -> None:
    worker, seed, limit = results.get("worker"), results.get("seed"), results.get("limit")
    if worker and limit:
        for other in ("limit", "logged"):
            if other in results:
                print(f"bench: staging: worker {worker['phases']['stage']:.2f} s, {other} {results[other]['phases']['stage']:.2f} s:"
                      f" {results[other]['phases']['stage'] / worker['phases']['stage']:.2f}x its rows/s", flush=True)
    if worker and seed:
        print(f"bench: whole import: worker {worker['wall']:.1f} s, seed {seed['wall']:.1f} s: {seed['wall'] / worker['wall']:.1f}x the seed's rows/s;"
              f" staging {seed['phases']['stage'] / worker['phases']['stage']:.1f}x", flush=True)
    if worker and "worker_small" in results:
        print(f"bench: worker peak RSS {results['worker_small']['rss_mb']:.1f} MB at {rows // 5:,} rows, {worker['rss_mb']:.1f} MB at {rows:,}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
