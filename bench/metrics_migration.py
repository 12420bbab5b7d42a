"""Benchmark of the metrics_migration job against the seed's row-by-row loop and the limit.

    .venv/bin/python -m bench.metrics_migration                    # 1,000,000 source rows (166,667 groups of 6)
    .venv/bin/python -m bench.metrics_migration --rows 120000      # quick check

Each contender starts from the same fresh schema (seed 001's tables, the source filled by SQL)
and runs as its own process, timed with its peak RSS:
- `worker`: `python -m worker run --job metrics_migration` (migrate, refresh, verify);
- `loop`: bench/metrics_migration_loop.py, the seed's design over local Postgres: per group an
  exists check, then one INSERT per target row; timed on the first `--loop-rows` source rows
  (it is linear: rows/s is what compares) and said so;
- `limit`: bench/metrics_migration_limit.py, one INSERT ... SELECT per table for the whole
  source, then the refresh.
The end state is checked after worker and limit (the five counts). Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import pg_connect
from bench.jobs import finish, job_env, run_contenders
from bench.run import CpuMeter, run_measured, start_services
from tests.integration.metrics_data import counts
from worker import tables
from worker.config import load_settings

SCHEMA = "bench_mm"
GROUP = 6


def create(env: dict[str, str], rows: int) -> None:
    """Seed 001's tables with `rows` source rows: groups of one brand row and 5 competitor rows,
    1 group in 25 without sentiment, over 1,000 brands of 5 competitors each."""
    with pg_connect(load_settings(env), autocommit=True) as conn:
        tables.fresh_schema(conn, SCHEMA, "metrics_migration")
        groups = rows // GROUP
        conn.execute("INSERT INTO brands (id, name) SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(b), 12, '0'))::uuid, 'Brand ' || b FROM generate_series(1, 1000) b")
        conn.execute("INSERT INTO brand_competitors (brand_id, competitor_name) SELECT id, 'Rival ' || c FROM brands, generate_series(1, 5) c")
        conn.execute("INSERT INTO generated_queries (id, text) VALUES ('00000000-0000-0000-0000-000000000999', 'q')")
        conn.execute("INSERT INTO collector_results SELECT generate_series(1, %s)", (groups,))
        conn.execute(
            "INSERT INTO extracted_positions (collector_result_id, brand_id, customer_id, query_id, collector_type, topic, processed_at,"
            " competitor_name, visibility_index, share_of_answers_brand, has_brand_presence, total_brand_mentions, sentiment_label,"
            " sentiment_score, visibility_index_competitor, competitor_positions, competitor_mentions, sentiment_label_competitor)"
            " SELECT g, ('00000000-0000-0000-0000-' || lpad(to_hex(g %% 1000 + 1), 12, '0'))::uuid, '00000000-0000-0000-0000-0000000000cc',"
            " '00000000-0000-0000-0000-000000000999', 'chatgpt', 'shoes', timestamptz '2026-11-01' + g * interval '1 minute',"
            " CASE WHEN c = 0 THEN NULL ELSE 'Rival ' || c END, 40.5, 12.25, g %% 2 = 0, 3,"
            " CASE WHEN c = 0 AND g %% 25 <> 0 THEN (ARRAY['positive', 'NEGATIVE', 'Neutral'])[g %% 3 + 1] END, 0.5,"
            " 21.0, ARRAY[c, c + 3], 2,"
            " CASE WHEN c > 0 AND g %% 25 <> 0 THEN (ARRAY['positive', 'NEGATIVE', 'Neutral'])[(g + c) %% 3 + 1] END"
            " FROM generate_series(1, %s) g, generate_series(0, 5) c ORDER BY g, c",
            (groups,),
        )
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def expected(rows: int) -> tuple[int, ...]:
    groups = rows // GROUP
    labelled = groups - groups // 25
    return groups, groups, groups * 5, labelled, labelled * 5


def run_one(name: str, services: Any, meter: CpuMeter, rows: int, loop_rows: int, out: Path) -> dict[str, Any]:
    env = job_env(services, f"mm_{name}", METRICS_SOURCE_TABLE=f"{SCHEMA}.extracted_positions")
    create(env, rows)
    cmd = {
        "worker": [sys.executable, "-m", "worker", "run", "--job", "metrics_migration"],
        "loop": [sys.executable, "-m", "bench.metrics_migration_loop", str(loop_rows // GROUP)],
        "limit": [sys.executable, "-m", "bench.metrics_migration_limit"],
    }[name]
    m = run_measured(cmd, env, out / name, meter)
    if m["rc"] != 0:
        raise SystemExit(f"bench: {name} exited {m['rc']}:\n{m['stderr_tail']}")
    m["rows"] = loop_rows if name == "loop" else rows
    m["rate"] = m["rows"] / m["wall"]
    with pg_connect(load_settings(env), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}")
        m["state"] = counts(conn)
    m["ok"] = m["state"] == expected(m["rows"])
    m.pop("stdout", None)
    return m


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_migration", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--loop-rows", type=int, default=60_000, help="source rows the row-by-row loop is timed on")
    parser.add_argument("--contenders", default="worker,loop,limit")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-mm-"))
    services = start_services("local")
    try:
        meter = CpuMeter(services)
        print(f"bench: {args.rows:,} source rows ({args.rows // GROUP:,} groups of {GROUP}); loop timed on {args.loop_rows:,}; logs in {out}", flush=True)
        results = run_contenders(args.contenders.split(","), lambda name: run_one(name, services, meter, args.rows, args.loop_rows, out), "rows")
        small = run_one("worker", services, meter, args.rows // 5, args.loop_rows, out / "small") if "worker" in results else None
        finish(results, "loop", small, (f"{args.rows // 5:,} rows", f"{args.rows:,}"), out)
    finally:
        services.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
