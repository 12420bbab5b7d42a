"""Benchmark: the worker vs a plain-loop baseline vs the limit, on identical freshly seeded data.

    python -m bench.run [--rows N] [--repeat K] [--servers local|external] [--seed S]
                        [--contenders worker,baseline,limit] [--out DIR]

For every run of every contender the products table and the collection are dropped and seeded
again with the same seed (worker.demo_seed: COPY + bulk import), vacuumed and checkpointed, so
each contender starts from the same state. Each contender runs as its own subprocess, timed from
spawn to exit, with its peak RSS from /usr/bin/time (or wait4's rusage when that is absent).
See bench/README.md for what every figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import httpx
from psycopg import sql
from pymongo import MongoClient

from bench.common import COLLECTION, PRODUCTS_TABLE, SCRATCH_TABLE, inventory_settings, parse_result, pg_connect, typesense_base, typesense_headers
from worker.config import Settings, load_settings
from worker.demo_seed import DemoSummary, seed_demo
from worker.jobs.inventory_fields.settings import InventorySettings

REPO = Path(__file__).resolve().parent.parent
CONTENDERS = ("worker", "baseline", "limit", "before")
#: Contenders that are the worker itself: `before` runs the worker of --before-src (another commit).
WORKERS = ("worker", "before")
TIME_BIN = "/usr/bin/time"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "USER")


# ----------------------------------------------------------------------------------------------
# servers


def start_services(mode: str):
    """tests.servers.TestServices: our own loopback servers, or the TEST_* ones (external)."""
    from tests.servers import TestServices

    if mode == "local":
        # Ignore any TEST_* server variables: start all three ourselves.
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TEST_") or k == "TEST_KEEP_SERVER_DATA"}
    else:
        needed = ("TEST_DB_HOST", "TEST_MONGO_URI", "TEST_TYPESENSE_HOST")
        absent = [n for n in needed if not os.environ.get(n)]
        if absent:
            raise SystemExit(f"--servers external needs {', '.join(absent)} (see bench/README.md)")
        environ = dict(os.environ)
    services = TestServices(environ=environ)
    services.start()
    return services


class CpuMeter:
    """CPU seconds used by each local server's process group, and by the whole machine."""

    def __init__(self, services: Any):
        self.groups: dict[str, int] = {}
        for name, server in (("postgres", services.postgres), ("typesense", services.typesense),
                             ("mongo", services.mongo)):
            proc = getattr(server, "proc", None)
            if not getattr(server, "external", False) and proc is not None:
                self.groups[name] = proc.pid  # started with start_new_session: pgid == pid
        self.machine_ok = _cpu_count_in_proc_stat() == os.cpu_count()

    def snapshot(self) -> dict[str, float]:
        ticks = {name: 0 for name in self.groups}
        by_leader = {pid: name for name, pid in self.groups.items()}
        for pid, fields in _processes():
            name = by_leader.get(int(fields[2]))  # process group
            if name is None:
                continue
            ticks[name] += int(fields[11]) + int(fields[12])  # utime + stime
            if pid == self.groups[name]:  # the leader also holds its reaped children's
                ticks[name] += int(fields[13]) + int(fields[14])
        snap = {name: t / CLK_TCK for name, t in ticks.items()}
        if self.machine_ok:
            with open("/proc/stat") as f:
                cpu = [int(x) for x in f.readline().split()[1:]]
            idle = cpu[3] + (cpu[4] if len(cpu) > 4 else 0)
            snap["machine"] = (sum(cpu[:8]) - idle) / CLK_TCK
        return snap


def pin_servers(services: Any) -> str:
    """Typesense on the first half of the CPUs; Postgres, the MongoDB stand-in, this harness and
    the contenders it starts on the other half: as if the search index ran on its own machine,
    so that a contender's Postgres work cannot take CPU from Typesense's import."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin-servers needs at least 2 CPUs")
    search, rest = set(cpus[: len(cpus) // 2]), set(cpus[len(cpus) // 2:])
    for server, allowed in ((services.typesense, search), (services.postgres, rest), (services.mongo, rest)):
        proc = getattr(server, "proc", None)
        if getattr(server, "external", False) or proc is None:
            raise SystemExit("--pin-servers needs the local servers (--servers local)")
        _pin_process_tree(proc.pid, allowed)
    os.sched_setaffinity(0, rest)  # inherited by every process started from here on
    return f"Typesense on CPU {sorted(search)}, the rest on CPU {sorted(rest)}"


def _pin_process_tree(root: int, cpus: set[int]) -> None:
    """Every thread of `root` and of its children (a Postgres server's backends and helpers);
    processes and threads they start later inherit the setting."""
    for pid, fields in _processes():
        if pid != root and int(fields[1]) != root:  # parent
            continue
        try:
            for task in os.scandir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(task.name), cpus)
        except OSError:  # gone meanwhile
            continue


def _processes() -> Iterator[tuple[int, list[str]]]:
    """Each live process's pid and the fields of its /proc/<pid>/stat after the command name
    (which may hold spaces): [1] parent, [2] process group, [11]-[14] CPU ticks."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                data = f.read()
        except OSError:  # gone meanwhile
            continue
        yield int(entry.name), data[data.rindex(")") + 2:].split()


def _cpu_count_in_proc_stat() -> int:
    try:
        with open("/proc/stat") as f:
            return sum(1 for line in f if line.startswith("cpu") and line[3:4].isdigit())
    except OSError:
        return -1


# ----------------------------------------------------------------------------------------------
# data


def reseed(settings: Settings, inventory: InventorySettings, rows: int, seed: int) -> tuple[DemoSummary, float]:
    """Drop and seed the same data again, then VACUUM (FREEZE, ANALYZE) and CHECKPOINT, so no
    contender pays for the seed's hint bits, visibility map or dirty buffers."""
    started = time.monotonic()
    with pg_connect(settings, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
            sql.Identifier(inventory.scratch_table.schema, inventory.scratch_table.name)))
    summary = seed_demo(settings, inventory.products_table, rows, "int", seed, drop=True)
    with pg_connect(settings, autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM (FREEZE, ANALYZE) {}").format(
            sql.Identifier(inventory.products_table.schema, inventory.products_table.name)))
        try:
            conn.execute("CHECKPOINT")
        except Exception:  # needs superuser (or pg_checkpoint) on an external server
            pass
    return summary, time.monotonic() - started


def verify(settings: Settings, inventory: InventorySettings, summary: DemoSummary) -> dict[str, Any]:
    """The job's end state: no NULL deleted_at in Postgres; every document has both fields."""
    table = sql.Identifier(inventory.products_table.schema, inventory.products_table.name)
    with pg_connect(settings, autocommit=True) as conn:
        null_left = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE deleted_at IS NULL").format(table)).fetchone()[0]
    base, coll = typesense_base(settings), settings.typesense_collection
    with httpx.Client(headers=typesense_headers(settings), timeout=120) as http:
        docs = http.get(f"{base}/collections/{coll}").json()["num_documents"]
        try:
            r = http.get(f"{base}/collections/{coll}/documents/search", params={
                "q": "*", "query_by": "name", "per_page": 1,
                "filter_by": "created_at:>=0 && deleted_at:>=0"})
            complete = r.json().get("found") if r.status_code == 200 else None
        except httpx.HTTPError:
            complete = None
    return {
        "pg_null_deleted_at_left": null_left,
        "index_documents": docs,
        "index_documents_with_both_fields": complete,
        "ok": null_left == 0 and docs == summary.documents and complete == docs,
    }


# ----------------------------------------------------------------------------------------------
# running one contender


def contender_env(services: Any, mongo_db: str, worker_src: Path = REPO) -> dict[str, str]:
    env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
    env.update(services.env())
    # worker/ and utils/ from worker_src first; bench/ (and anything else) from this repo.
    path = [str(worker_src)] if worker_src == REPO else [str(worker_src), str(REPO)]
    env.update(
        PYTHONPATH=os.pathsep.join(path),
        TYPESENSE_COLLECTION=COLLECTION,
        PRODUCTS_TABLE=PRODUCTS_TABLE,
        SCRATCH_TABLE=SCRATCH_TABLE,
        MONGO_DB_NAME=mongo_db,
        SLEEP_BETWEEN_BATCHES="0",
        LOG_FORMAT="json",
    )
    return env


def run_measured(cmd: list[str], env: dict[str, str], run_dir: Path, meter: CpuMeter) -> dict[str, Any]:
    """Run `cmd` to completion in `run_dir`; wall time, peak RSS, CPU of it and of the servers."""
    run_dir.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path, time_path = run_dir / "stdout.log", run_dir / "stderr.log", run_dir / "time.txt"
    use_time = os.access(TIME_BIN, os.X_OK)
    full = [TIME_BIN, "-f", "%M %e %U %S", "-o", str(time_path), *cmd] if use_time else cmd
    before = meter.snapshot()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        started = time.monotonic()
        # cwd is the run directory: no `.env` of the repo or of the caller is picked up.
        proc = subprocess.Popen(full, env=env, cwd=run_dir, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    after = meter.snapshot()
    result: dict[str, Any] = {"rc": proc.returncode, "wall": wall}
    if use_time:
        last = time_path.read_text().strip().splitlines()[-1].split()
        result.update(rss_mb=int(last[0]) / 1024, cpu_client=float(last[2]) + float(last[3]))
    else:
        result.update(rss_mb=usage.ru_maxrss / 1024, cpu_client=usage.ru_utime + usage.ru_stime)
    for name in after:
        result[f"cpu_{name}"] = after[name] - before.get(name, 0.0)
    if "machine" in after:
        accounted = result["cpu_client"] + sum(result.get(f"cpu_{n}", 0.0) for n in meter.groups)
        result["cpu_other"] = max(0.0, result["cpu_machine"] - accounted)
    result["stdout"] = stdout_path.read_text(errors="replace")
    result["stderr_tail"] = "\n".join(stderr_path.read_text(errors="replace").splitlines()[-20:])
    return result


def worker_phases(stdout: str) -> dict[str, Any]:
    """Per-phase figures from the worker's JSON log: the engine's own rows_per_s for keyset
    phases, and spans between log timestamps (job started -> each 'phase done'), summed over
    a phase's passes (the reconcile phase walks at least once)."""
    events = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    out: dict[str, Any] = {}
    mark = None
    for e in events:
        ts = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) if "timestamp" in e else None
        if e.get("event") in ("job started", "job resumed"):
            mark = ts
        elif e.get("event") == "phase done":
            phase = e["phase"]
            if mark is not None and ts is not None:
                out[f"span:{phase}"] = out.get(f"span:{phase}", 0.0) + (ts - mark).total_seconds()
            mark = ts
            out[f"passes:{phase}"] = out.get(f"passes:{phase}", 0) + 1
            if e.get("rows") is not None:
                out[f"rows:{phase}"] = e["rows"]
            if e.get("rows_per_s"):
                out[f"rows_per_s:{phase}"] = e["rows_per_s"]
                out[f"phase:{phase}"] = out.get(f"phase:{phase}", 0.0) + e["rows"] / e["rows_per_s"]
        elif e.get("event") == "job completed":
            out["counters"] = e.get("counters", {})
    return out


def run_contender(name: str, services: Any, settings: Settings, inventory: InventorySettings, summary: DemoSummary, run_dir: Path,
                  meter: CpuMeter, rows: int, worker_src: Path = REPO,
                  worker_settings: dict[str, str] | None = None, py_spy: str | None = None) -> dict[str, Any]:
    mongo_db = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    env = contender_env(services, mongo_db, worker_src)
    if name in WORKERS:
        env.update(worker_settings or {})
    module = {"worker": "worker", "before": "worker", "baseline": "bench.baseline", "limit": "bench.limit"}[name]
    cmd = [sys.executable, "-m", module]
    if py_spy and name == "worker":
        # Sampling costs the worker some CPU: use profiled runs to see where time goes, not to time.
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [py_spy, "record", "--threads", "--format", "raw", "--rate", "200",
               "-o", str(run_dir / "profile.txt"), "--", *cmd]
    try:
        m = run_measured(cmd, env, run_dir, meter)
    finally:
        with MongoClient(services.env()["MONGO_URI"], serverSelectionTimeoutMS=5000) as mongo:
            try:
                mongo.drop_database(mongo_db)
            except Exception:
                pass
    if m["rc"] != 0:
        raise SystemExit(f"{name} exited with {m['rc']}; logs in {run_dir}\n{m['stderr_tail']}")
    if name in WORKERS:
        m.update(worker_phases(m["stdout"]))
        if "counters" not in m:
            raise SystemExit(f"worker finished without 'job completed'; logs in {run_dir}")
    else:
        result = parse_result(m["stdout"])
        if result is None:
            raise SystemExit(f"{name} printed no result; logs in {run_dir}\n{m['stderr_tail']}")
        m["counters"] = result["counters"]
        for phase, seconds in result["phases"].items():
            m[f"phase:{phase}"] = seconds
    m["verify"] = verify(settings, inventory, summary)
    m["rows_per_s"] = rows / m["wall"]
    del m["stdout"]
    return m


def describe_source(src: Path) -> str:
    """Which code the contenders run: the git commit and any uncommitted change under worker/, utils/."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(src), *cmd], capture_output=True, text=True, timeout=10,
                              check=True).stdout
    try:
        if Path(git("rev-parse", "--show-toplevel").strip()).resolve() != src:
            raise ValueError
        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = [line[3:] for line in git("status", "--porcelain", "--", "worker", "utils").splitlines()]
    except (OSError, ValueError, subprocess.SubprocessError):
        return f"{src} (not a git checkout)"
    return f"{src} at {head}" + (f", uncommitted changes in {', '.join(dirty)}" if dirty else ", clean")


# ----------------------------------------------------------------------------------------------
# report


def _with_rest(runs: list[dict[str, Any]], phase_prefix: str) -> list[dict[str, Any]]:
    """Each run's "rest": its wall time not covered by the phases timed under `phase_prefix`."""
    for r in runs:
        r["rest"] = r["wall"] - sum(v for k, v in r.items() if k.startswith(phase_prefix))
    return runs


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str = ",.1f") -> str:
    return "-" if value is None else format(value, spec)


def report(results: dict[str, list[dict[str, Any]]], rows: int, summary: DemoSummary, reseed_s: list[float],
           args: argparse.Namespace, out_dir: Path) -> None:
    cpu_cols = ("cpu_client", "cpu_postgres", "cpu_typesense", "cpu_mongo", "cpu_other")
    header = (f"{'contender':<52}{'wall s':>9}{'rows/s':>11}{'peak RSS MB':>13}"
              f"{'CPU s: client':>15}{'pg':>7}{'ts':>7}{'mongo':>7}{'other':>7}")
    lines = [header, "-" * len(header)]

    def row(label: str, seconds: float | None, runs: list[dict] | None = None, count: int = rows,
            unit: str = "") -> None:
        rate = count / seconds if seconds and count else None
        text = f"{label:<52}{fmt(seconds, '.2f'):>9}{fmt(rate, ',.0f') + unit:>11}"
        if runs is not None:
            text += f"{fmt(median_of(runs, 'rss_mb')):>13}"
            text += f"{fmt(median_of(runs, cpu_cols[0])):>15}"
            text += "".join(f"{fmt(median_of(runs, c)):>7}" for c in cpu_cols[1:])
        lines.append(text.rstrip())

    med: dict[str, float | None] = {}
    w = results.get("worker")
    if w:
        med["worker"] = median_of(w, "wall")
        med["worker_products"] = median_of(w, "phase:products")
        row("worker (python -m worker), whole job", med["worker"], w)
        row("  ensure_schema (log span)", median_of(w, "span:ensure_schema"))
        row("  products phase (engine rows_per_s)", med["worker_products"])
        row("  index_only phase (log span, incl. scratch)", median_of(w, "span:index_only"),
            count=summary.documents, unit="*")
        med["worker_reconcile"] = median_of(w, "span:reconcile")
        row("  reconcile phase (log span, export + compare)", med["worker_reconcile"], count=summary.documents, unit="*")
        row("  rest: start-up, preflight, lease, exit", median_of(_with_rest(w, "span:"), "rest"), count=0)
    before = results.get("before")
    if before:
        med["before"] = median_of(before, "wall")
        med["before_products"] = median_of(before, "phase:products")
        row("before (worker of --before-src), whole job", med["before"], before)
        row("  products phase (engine rows_per_s)", med["before_products"])
    b = results.get("baseline")
    if b:
        med["baseline"] = median_of(b, "wall")
        med["baseline_products"] = median_of(b, "phase:products")
        row("baseline (plain 1,000-row loop), whole job", med["baseline"], b)
        row("  schema", median_of(b, "phase:schema"))
        row("  products loop", med["baseline_products"])
        row("  index_only loop (export pages of 250)", median_of(b, "phase:index_only"), count=summary.documents, unit="*")
        row("  rest: start-up, connect, exit", median_of(_with_rest(b, "phase:"), "rest"), count=0)
    lim = results.get("limit")
    if lim:
        for r in lim:  # derived per run, then the median of each
            r["limit_products_sum"] = r["phase:pg_update"] + r["phase:import"]
            r["limit_products_max"] = max(r["phase:pg_update"], r["phase:import"])
            r["limit_job_sum"] = r["phase:schema"] + r["limit_products_sum"] + r["phase:index_only"]
            r["limit_job_pipelined"] = r["phase:schema"] + r["limit_products_max"] + r["phase:index_only"]
        for key in ("limit_products_sum", "limit_products_max", "limit_job_sum", "limit_job_pipelined"):
            med[key] = median_of(lim, key)
        row("limit process (all components below), wall", median_of(lim, "wall"), lim)
        row("  schema: add the 2 fields", median_of(lim, "phase:schema"))
        row("  pg_read: COPY of the JSON rows (info only)", median_of(lim, "phase:pg_read"))
        row("  import: COPY streamed into 1 bulk import", median_of(lim, "phase:import"))
        row("  pg_update: 1 UPDATE ... WHERE deleted_at IS NULL", median_of(lim, "phase:pg_update"))
        row("  index_only: export->COPY, anti-join, 1 import", median_of(lim, "phase:index_only"), count=summary.documents, unit="*")
        row("limit one-shot (pg_update + import)", med["limit_products_sum"])
        row("limit pipelined bound (max(pg_update, import))", med["limit_products_max"])
        row("limit whole job, one-shot (schema+upd+imp+idx)", med["limit_job_sum"])
        row("limit whole job, pipelined (schema+max+idx)", med["limit_job_pipelined"])

    print()
    print(f"machine: nproc={os.cpu_count()}, {platform.machine()}, Python {platform.python_version()},"
          f" loadavg at end {' '.join(open('/proc/loadavg').read().split()[:3])}"
          + (f"; pinned: {args.pinned}" if args.pin_servers else ""))
    print(f"data: N={rows:,} products ({summary.null_deleted_at:,} deleted_at NULL, {summary.deleted:,} deleted,"
          f" {summary.null_created_at:,} created_at NULL, {summary.missing_in_index:,} missing from the index);"
          f" {summary.documents:,} documents ({summary.index_only:,} index-only); seed {args.seed};"
          f" reseed median {statistics.median(reseed_s):.1f}s")
    print(f"runs per contender: {args.repeat} (figures are medians); servers: {args.servers}; logs: {out_dir}")
    print(f"worker code: {args.source}" + (f"; before: {args.before_source}" if args.before_source else ""))
    print()
    print("\n".join(lines))
    print("rows/s = products rows (N) / seconds; * = index documents / seconds instead."
          " CPU s = CPU seconds used during the run by the contender process, each server and"
          " everything else on the machine ('other').")

    def ratio(label: str, a: str, b: str) -> None:
        x, y = med.get(a), med.get(b)
        if x and y:
            print(f"  {label:<62}{x / y:6.2f}x   (worker reaches {100 * y / x:5.1f}% of its rows/s)")

    print()
    print("ratios (time / time; >1 means the worker is slower):")
    ratio("worker whole job / before whole job", "worker", "before")
    ratio("worker products phase / before products phase", "worker_products", "before_products")
    ratio("worker whole job / baseline whole job", "worker", "baseline")
    ratio("worker products phase / baseline products loop", "worker_products", "baseline_products")
    ratio("worker products phase / limit one-shot (pg_update + import)", "worker_products", "limit_products_sum")
    ratio("worker products phase / limit pipelined bound (max)", "worker_products", "limit_products_max")
    ratio("worker whole job / limit whole job one-shot", "worker", "limit_job_sum")
    ratio("worker whole job / limit whole job pipelined", "worker", "limit_job_pipelined")
    if med.get("worker_reconcile") and med.get("worker_products") and med.get("worker"):
        print(f"  {'reconcile phase / worker products phase (target < 10%)':<62}"
              f"{100 * med['worker_reconcile'] / med['worker_products']:5.1f}%")
        print(f"  {'reconcile phase / worker whole job':<62}{100 * med['worker_reconcile'] / med['worker']:5.1f}%"
              "   (the limit contenders have no reconcile phase)")

    print()
    print("checks (counters should agree across contenders; end state verified after each run):")
    expect = {"pg_rows_updated": summary.null_deleted_at, "missing_in_index": summary.missing_in_index,
              "index_only_defaulted": summary.index_only}
    print(f"  expected from the seed: {expect}")
    for name, runs in results.items():
        for i, r in enumerate(runs, 1):
            c = r.get("counters", {})
            shown = {k: c.get(k) for k in ("pg_rows_updated", "index_docs_updated", "missing_in_index",
                                           "index_only_defaulted", "failures")}
            print(f"  {name} run {i}: wall {r['wall']:.2f}s, counters {shown}, end state"
                  f" {'OK' if r['verify']['ok'] else 'WRONG ' + json.dumps(r['verify'])}")


# ----------------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="products to seed (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender; the median is reported")
    parser.add_argument("--servers", choices=("local", "external"), default="local",
                        help="local: start our own on loopback (default); external: the TEST_* servers")
    parser.add_argument("--seed", type=int, default=0, help="data seed (same for every run)")
    parser.add_argument("--contenders", default="worker,baseline,limit", help="comma-separated subset of "
                        + ",".join(CONTENDERS))
    parser.add_argument("--out", help="directory for logs and results.json (default: a new temp dir)")
    parser.add_argument("--worker-src", default=str(REPO), help="directory holding the worker/ and utils/ the"
                        " contenders run (e.g. a `git archive` of another commit); default this repo")
    parser.add_argument("--before-src", help="directory holding another version's worker/ and utils/ (e.g. a"
                        " `git archive` of an earlier commit), run as the contender `before`")
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the worker only (repeatable), e.g. BATCH_SIZE_MAX=20000")
    parser.add_argument("--pin-servers", action="store_true", help="Typesense on half of the CPUs, Postgres,"
                        " MongoDB and the contenders on the other half (as if on separate machines)")
    parser.add_argument("--py-spy", metavar="PATH", help="profile the worker runs with this py-spy binary"
                        " (collapsed stacks per thread in <out>/worker-K/profile.txt; slows the worker)")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.worker_env):
        parser.error("--worker-env takes NAME=VALUE")
    worker_settings = dict(item.split("=", 1) for item in args.worker_env)
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if args.rows < 1 or args.repeat < 1 or not contenders or set(contenders) - set(CONTENDERS):
        parser.error("need --rows >= 1, --repeat >= 1 and contenders among " + ",".join(CONTENDERS))
    worker_src = Path(args.worker_src).resolve()
    if not (worker_src / "worker" / "__main__.py").is_file() or not (worker_src / "utils").is_dir():
        parser.error(f"--worker-src {worker_src} has no worker/__main__.py and utils/")
    args.source = describe_source(worker_src)
    before_src = Path(args.before_src).resolve() if args.before_src else None
    if ("before" in contenders) != (before_src is not None):
        parser.error("the contender `before` and --before-src go together")
    if before_src is not None and not (before_src / "worker" / "__main__.py").is_file():
        parser.error(f"--before-src {before_src} has no worker/__main__.py")
    args.before_source = describe_source(before_src) if before_src else None
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    dotenvs = [str(d / ".env") for d in (out_dir.resolve(), *out_dir.resolve().parents) if (d / ".env").is_file()]
    if dotenvs:  # the worker's load_settings would read it from the run directory's ancestors
        print(f"bench: WARNING: {dotenvs[0]} exists above the run directory; the worker reads variables"
              " from it that are not set here (use --out elsewhere)", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # unwind through services.stop()

    print(f"bench: N={args.rows:,}, repeat={args.repeat}, contenders={','.join(contenders)}, "
          f"nproc={os.cpu_count()}, servers={args.servers}, logs in {out_dir}", flush=True)
    print(f"bench: worker code: {args.source}; worker settings: {worker_settings or 'defaults'}", flush=True)
    started = time.monotonic()
    services = start_services(args.servers)
    try:
        print(f"bench: servers up in {time.monotonic() - started:.1f}s", flush=True)
        if args.pin_servers:
            args.pinned = pin_servers(services)
            print(f"bench: pinned: {args.pinned}", flush=True)
        env = services.env()
        env.update(TYPESENSE_COLLECTION=COLLECTION, PRODUCTS_TABLE=PRODUCTS_TABLE, SCRATCH_TABLE=SCRATCH_TABLE)
        settings = load_settings(env)
        inventory = inventory_settings(env)
        meter = CpuMeter(services)
        results: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
        reseed_s: list[float] = []
        summary = None
        for rep in range(1, args.repeat + 1):
            for name in contenders:
                summary, seconds = reseed(settings, inventory, args.rows, args.seed)
                reseed_s.append(seconds)
                run_dir = out_dir / f"{name}-{rep}"
                print(f"bench: run {rep}/{args.repeat} {name}: reseeded in {seconds:.1f}s, running...", flush=True)
                src = before_src if name == "before" else worker_src
                m = run_contender(name, services, settings, inventory, summary, run_dir, meter, args.rows, src,
                                  worker_settings, args.py_spy)
                results[name].append(m)
                extra = ""
                if name in WORKERS and m.get("rows_per_s:products"):
                    extra = f", products phase {m['rows_per_s:products']:,.0f} rows/s"
                print(f"bench:   {name}: {m['wall']:.2f}s, {m['rows_per_s']:,.0f} rows/s, peak RSS"
                      f" {m['rss_mb']:.1f} MB{extra}, end state {'OK' if m['verify']['ok'] else 'WRONG'}", flush=True)
        (out_dir / "results.json").write_text(json.dumps(
            {"rows": args.rows, "repeat": args.repeat, "worker_code": args.source, "summary": summary.__dict__, "reseed_s": reseed_s,
             "results": results}, indent=2, default=str))
        report(results, args.rows, summary, reseed_s, args, out_dir)
    finally:
        services.stop()
    print(f"\nbench: total {time.monotonic() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
