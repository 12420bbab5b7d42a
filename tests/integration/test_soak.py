"""Soak: one backfill killed (SIGKILL or SIGTERM) at random instants and restarted each time must
leave both stores, document for document, and its counters exactly as an uninterrupted run does.

The same data set is loaded into two namespaces (Mongo database, Typesense collection, products
and scratch tables). The reference namespace is backfilled by one uninterrupted run, whose log
gives the run's timeline: how long its work took (from taking the lease to "job completed") and
when each phase ended. The kill instants are drawn on that timeline with `random.Random(seed)`:
the first within `ensure_schema` (a few tens of milliseconds), the others stratified over the rest
of the run (one in each equal slice), so they spread over `products` and `index_only`. Each
worker of the soaked namespace starts where its checkpoint puts it on that timeline and runs the
rest of the way to the next instant, counted from the moment it logs that it took the lease
("job started" / "job resumed"), so Python's start-up and the wait for a killed predecessor's
lease (LEASE_TTL_SECONDS=1) do not count, and work lost to a kill is redone before the next one.
It is then sent SIGKILL or SIGTERM (a coin flip each), the checkpoint is read and recorded, and
the worker is started again; after the last kill it runs to completion.

`test_soak_short` (20,000 rows, 5 kills) runs with the normal tests; `test_soak_long` (200,000
rows, 20 kills) is marked slow: `pytest -m slow -s tests/integration/test_soak.py`. Both print a
report (pytest `-s` shows it). The seed is random per run and printed; `SOAK_SEED=<n>` repeats
a run's kill plan (the instants a kill actually lands at still depend on the machine's timing).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from tests.integration.inventory_data import (
    checkpoint,
    events,
    index_documents,
    load,
    make_dataset,
    pg_connect,
    pg_rows,
    start_worker,
    table_parts,
)

PHASES = ("ensure_schema", "products", "index_only", "reconcile")
START_EVENTS = {"job started", "job resumed", "already completed; nothing to do"}
#: Kill instants are drawn up to this fraction of the reference run's work time, so that the work
#: left after the last kill (plus what restarts redo) is not already done when it is due.
LAST_KILL_AT = 0.95
SIGTERM_EXIT_WITHIN = 15.0
#: index_only batches are cheap (few documents need a patch); smaller pages give that phase a
#: share of the run, and batches, comparable to products', so kills land inside its walk too.
INDEX_PAGE = "100"


@dataclass
class Kill:
    no: int
    signal: str
    planned_at: float  # seconds of work time into the reference run
    planned_phase: str  # the reference run's phase at that instant
    exit_code: int
    stop_seconds: float  # from sending the signal to the process's exit
    stop_logged: float | None  # from sending SIGTERM to the "stopped cleanly" line
    status: str | None  # the checkpoint after the kill
    phase: str | None
    batch_no: int
    last_id: Any
    intents: int  # batches (or steps) started and not yet checkpointed: the checkpoint's `intents`
    lease_held: bool

    def line(self) -> str:
        return (
            f"  kill {self.no:>2}: {self.signal:<7} at {self.planned_at:7.3f}s (reference phase {self.planned_phase:<13})"
            f" -> exit {self.exit_code:>3} in {self.stop_seconds:5.2f}s"
            + (f" (stop logged after {self.stop_logged:.2f}s)" if self.stop_logged is not None else "")
            + f"; checkpoint: status={self.status} phase={self.phase}"
            f" batch_no={self.batch_no} last_id={self.last_id!r} intents={f'{self.intents} pending' if self.intents else 'none'}"
            f" lease={'held' if self.lease_held else 'free'}"
        )


# -- helpers ---------------------------------------------------------------------------------


def namespace(env: dict[str, str], suffix: str) -> dict[str, str]:
    """A copy of `env` whose Mongo database, collection and tables are its own."""
    other = dict(env)
    for name in ("MONGO_DB_NAME", "TYPESENSE_COLLECTION", "PRODUCTS_TABLE", "SCRATCH_TABLE"):
        other[name] = env[name] + suffix
    return other


def pg_table(env: dict[str, str]) -> list[tuple]:
    """Every column of every product row, in key order."""
    with pg_connect(env) as conn:
        return conn.execute(
            sql.SQL("SELECT id, name, created_at, deleted_at FROM {} ORDER BY id").format(sql.Identifier(*table_parts(env)))
        ).fetchall()


def scratch_exists(env: dict[str, str]) -> bool:
    with pg_connect(env) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (env["SCRATCH_TABLE"],)).fetchone()[0]


def diff(a: dict, b: dict, limit: int = 5) -> str:
    """What differs between two mappings, briefly: keys only in one, and a few unequal values."""
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    unequal = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    parts = []
    if only_a:
        parts.append(f"{len(only_a)} only in the soaked run, e.g. {only_a[:limit]}")
    if only_b:
        parts.append(f"{len(only_b)} only in the reference, e.g. {only_b[:limit]}")
    if unequal:
        shown = "; ".join(f"{k!r}: soaked {a[k]!r} != reference {b[k]!r}" for k in unequal[:limit])
        parts.append(f"{len(unequal)} unequal, e.g. {shown}")
    return ", ".join(parts) or "none"


def timestamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def log_events(path: Path) -> list[dict[str, Any]]:
    return events(path.read_text()) if path.exists() else []


def wait_until_started(proc, log_path: Path, timeout: float) -> str | None:
    """Wait until this run has taken the lease (it logs that, after installing its signal
    handlers); return the event, or None if the process exited first."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        text = log_path.read_text() if log_path.exists() else ""
        for event in events(text[seen:]):
            if event.get("event") in START_EVENTS:
                return event["event"]
        seen = text.rfind("\n") + 1 if text else 0
        if proc.poll() is not None:
            return None
        time.sleep(0.002)
    raise AssertionError(f"worker did not take the lease within {timeout}s; log: {log_path}")


def timeline(log_path: Path) -> tuple[float, dict[str, tuple[float, float]], dict[str, list[tuple[int, float]]]]:
    """Of a complete run: its work time (lease taken to "job completed"), each phase's window in
    it, and per phase when each amount of work was checkpointed (rows done, time of the log line).
    Batch sizes adapt to timing, so positions are compared by rows done, not by batch number."""
    evs = log_events(log_path)
    start = next(timestamp(e) for e in evs if e["event"] in ("job started", "job resumed"))
    end = next(timestamp(e) for e in evs if e["event"] == "job completed")
    windows, previous = {}, 0.0
    for phase in PHASES:
        done = next(timestamp(e) - start for e in evs if e["event"] == "phase done" and e.get("phase") == phase)
        windows[phase] = (previous, done)
        previous = done
    progress: dict[str, list[tuple[int, float]]] = {phase: [] for phase in PHASES}
    for e in evs:
        if e["event"] == "batch":
            progress[e["phase"]].append((e["done"], timestamp(e) - start))
    return end - start, windows, progress


def position(
    cp: dict[str, Any] | None, windows: dict[str, tuple[float, float]], progress: dict[str, list[tuple[int, float]]]
) -> float:
    """Where on the reference run's timeline a worker starting from checkpoint `cp` begins: when
    the reference had checkpointed as many rows of the same phase."""
    cp = cp or {}
    phase = cp.get("phase") or PHASES[0]
    reached = [t for done, t in progress.get(phase, []) if done <= cp.get("phase_done", 0)]
    return reached[-1] if reached else windows[phase][0]


def phase_at(windows: dict[str, tuple[float, float]], instant: float) -> str:
    for phase, (_, end) in windows.items():
        if instant <= end:
            return phase
    return PHASES[-1]


def plan_kills(rng: random.Random, kills: int, work: float, windows: dict[str, tuple[float, float]]) -> list[float]:
    """Sorted kill instants in work time: one inside ensure_schema, one inside index_only (a short
    phase now that its scratch table loads during products) and one inside reconcile (before
    LAST_KILL_AT), the rest one per equal slice of the remaining run up to LAST_KILL_AT."""
    high = LAST_KILL_AT * work
    index_start, index_end = windows["index_only"]
    reconcile_start = windows["reconcile"][0]
    instants = [
        rng.uniform(0.0, windows["ensure_schema"][1]),
        rng.uniform(index_start, index_start + 0.8 * (index_end - index_start)),
        rng.uniform(reconcile_start, max(reconcile_start, high)),
    ]
    low = windows["ensure_schema"][1]
    width = (high - low) / max(kills - 3, 1)
    instants += [rng.uniform(low + k * width, low + (k + 1) * width) for k in range(kills - 3)]
    return sorted(instants)


def batch_events(paths: list[Path]) -> list[dict[str, Any]]:
    return [e for p in paths for e in log_events(p) if e["event"] == "batch"]


# -- the soak --------------------------------------------------------------------------------


def soak(worker_env: dict[str, str], tmp_path: Path, rows: int, kills: int, seed: int) -> None:
    began = time.monotonic()
    rng = random.Random(seed)
    settings = dict(LEASE_TTL_SECONDS="1", BATCH_SIZE="500", TYPESENSE_PAGE_SIZE=INDEX_PAGE, SLEEP_BETWEEN_BATCHES="0")
    soaked = dict(worker_env, **settings)
    reference = namespace(soaked, "_ref")
    tag = f"[seed {seed}, {rows} rows]"

    data = make_dataset(rows, "int")
    load(soaked, data)
    load(reference, data)
    loaded = time.monotonic()

    # The uninterrupted run: the state and counters to match, and the timeline to kill on.
    ref_log = tmp_path / "reference.log"
    ref_started = time.monotonic()
    proc = start_worker(reference, log_path=ref_log)
    assert proc.wait(timeout=60 + rows / 200) == 0, f"{tag} the reference run failed; log: {ref_log}"
    ref_elapsed = time.monotonic() - ref_started
    work, windows, ref_offsets = timeline(ref_log)
    instants = plan_kills(rng, kills, work, windows)

    # The soaked run: killed at each instant, restarted each time.
    made: list[Kill] = []
    logs: list[Path] = []
    finished_early = None
    soak_started = time.monotonic()
    for no, instant in enumerate(instants, start=1):
        sig = rng.choice((signal.SIGKILL, signal.SIGTERM))
        # The restart begins where its checkpoint is on the reference timeline: it runs the
        # rest of the way to the instant (at once, if a SIGTERM's last batch went past it).
        begins_at = position(checkpoint(soaked), windows, ref_offsets)
        at = max(instant, begins_at)
        log_path = tmp_path / f"run{len(logs) + 1:02d}.log"
        logs.append(log_path)
        proc = start_worker(soaked, log_path=log_path)
        if wait_until_started(proc, log_path, timeout=60) is not None:
            time.sleep(at - begins_at)
        if proc.poll() is not None:
            finished_early = (no, proc.returncode)
            break
        sent, sent_wall = time.monotonic(), time.time()
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
        stopped = time.monotonic() - sent
        cp = checkpoint(soaked) or {}
        stop_logged = next((timestamp(e) - sent_wall for e in log_events(log_path) if e["event"] == "stopped cleanly"), None)
        if cp.get("status") == "completed":  # it finished just before the signal arrived
            finished_early = (no, code)
            break
        if sig is signal.SIGTERM:
            assert code == 0, f"{tag} kill {no}: SIGTERM exit code {code}, expected 0; log: {log_path}"
            assert stopped < SIGTERM_EXIT_WITHIN, f"{tag} kill {no}: SIGTERM took {stopped:.1f}s to exit; log: {log_path}"
            forced = any(e["event"].startswith("forced exit") for e in log_events(log_path))
            assert forced or (cp.get("status") == "interrupted" and not cp.get("lease")), (
                f"{tag} kill {no}: after a clean SIGTERM stop the checkpoint is {cp.get('status')}, lease {cp.get('lease')}"
            )
        else:
            assert code == -signal.SIGKILL, f"{tag} kill {no}: SIGKILL exit code {code}; log: {log_path}"
        made.append(
            Kill(
                no=no, signal=sig.name, planned_at=at, planned_phase=phase_at(windows, at),
                exit_code=code, stop_seconds=stopped, stop_logged=stop_logged, status=cp.get("status"), phase=cp.get("phase"),
                batch_no=cp.get("batch_no", 0), last_id=cp.get("last_id"), intents=len(cp.get("intents") or []),
                lease_held=bool(cp.get("lease")),
            )
        )
    if finished_early is None:
        log_path = tmp_path / f"run{len(logs) + 1:02d}.log"
        logs.append(log_path)
        proc = start_worker(soaked, log_path=log_path)
        code = proc.wait(timeout=60 + rows / 100)
        assert code == 0, f"{tag} the final run exited {code}; log: {log_path}"
    else:
        assert finished_early[1] == 0, f"{tag} the run before kill {finished_early[0]} exited {finished_early[1]}"
    soak_elapsed = time.monotonic() - soak_started

    # Compare: whole rows, whole documents, counters, and the batches as logged.
    soaked_table, ref_table = pg_table(soaked), pg_table(reference)
    soaked_rows, ref_rows = pg_rows(soaked), pg_rows(reference)
    soaked_docs, ref_docs = index_documents(soaked), index_documents(reference)
    soaked_cp, ref_cp = checkpoint(soaked), checkpoint(reference)
    expected_counters = data.expected_counters()
    pg_identical = soaked_table == ref_table and soaked_rows == ref_rows
    ts_identical = soaked_docs == ref_docs
    counters_identical = soaked_cp["counters"] == ref_cp["counters"]

    batches, ref_batches = batch_events(logs), batch_events([ref_log])
    per_batch = Counter((b["phase"], b["batch_no"]) for b in batches)
    redone = sorted(key for key, n in per_batch.items() if n > 1)
    numbers = Counter(b["batch_no"] for b in batches)
    total = soaked_cp["batch_no"]
    missing = sorted(set(range(1, total + 1)) - set(numbers))
    extra = sorted(set(numbers) - set(range(1, total + 1)))
    # A SIGKILL between a batch's checkpoint save and its log line loses only the line.
    unexplained_missing = [n for n in missing if not any(k.signal == "SIGKILL" and k.batch_no == n for k in made)]
    # Batch sizes adapt to timing, so the soaked run's batches need not match the reference's;
    # they must tile each phase: every batch starts where the one before it (same phase) ended.
    by_number = {b["batch_no"]: b for b in batches}
    broken_chain = [
        (n, by_number[n - 1]["last_id"], by_number[n]["from_id"])
        for n in sorted(by_number)
        if n - 1 in by_number and by_number[n - 1]["phase"] == by_number[n]["phase"]
        and by_number[n]["from_id"] != by_number[n - 1]["last_id"]
    ]
    all_events = [e for p in logs for e in log_events(p)]
    redo_lines = sum(1 for e in all_events if e["event"] == "redoing a batch interrupted before its checkpoint")
    recounted = sum(1 for e in all_events if e["event"] == "rows changed since the interrupted batches; counting them afresh")
    forced = sum(1 for e in all_events if e["event"] == "forced exit; the batch in flight will be redone on the next start")

    report = [
        "",
        f"=== soak: {rows:,} rows, {kills} kills planned, seed {seed} (SOAK_SEED={seed} repeats the plan) ===",
        f"settings: {settings}",
        f"load of both namespaces: {loaded - began:.1f}s; reference run: {ref_elapsed:.2f}s wall, {work:.2f}s of work"
        f" ({', '.join(f'{phase} until {end:.3f}s' for phase, (_, end) in windows.items())}), {len(ref_batches)} batches",
        f"kills made: {len(made)} of {kills} ({Counter(k.signal for k in made)}); runs of the soaked worker: {len(logs)}",
        *(k.line() for k in made),
        f"  kills by checkpoint phase: {dict(Counter(k.phase for k in made))}; by reference phase: {dict(Counter(k.planned_phase for k in made))}",
        f"  kills leaving batches pending in the checkpoint: {sum(1 for k in made if k.intents)} of {len(made)}"
        f" (by signal: {dict(Counter(k.signal for k in made if k.intents))}; most at once: {max((k.intents for k in made), default=0)})",
    ]
    if finished_early:
        report.append(f"  the job completed before kill {finished_early[0]} was due; no more kills")
    report += [
        f"soaked run: {soak_elapsed:.1f}s wall in {len(logs)} runs; {len(batches)} batch lines, batch_no 1..{total}"
        f" (reference 1..{ref_cp['batch_no']}); batches redone after a SIGKILL: {redo_lines};"
        f" recounted: {recounted}; forced exits: {forced}",
        f"  completed batch logged twice: {redone or 'none'}; batch_no missing from the logs: {missing or 'none'}"
        f" (unexplained: {unexplained_missing or 'none'}); outside 1..{total}: {extra or 'none'};"
        f" batches not starting where the previous one ended: {len(broken_chain)}",
        f"counters soaked:    {dict(sorted(soaked_cp['counters'].items()))}",
        f"counters reference: {dict(sorted(ref_cp['counters'].items()))}",
        f"counters expected:  {dict(sorted(expected_counters.items()))}",
        f"identical: Postgres {pg_identical} ({len(soaked_table):,} rows), Typesense {ts_identical}"
        f" ({len(soaked_docs):,} documents), counters {counters_identical}",
    ]
    if not pg_identical:
        report.append(f"  Postgres differences: {diff({str(r[0]): r for r in soaked_table}, {str(r[0]): r for r in ref_table})}")
    if not ts_identical:
        report.append(f"  Typesense differences: {diff(soaked_docs, ref_docs)}")
    if not counters_identical:
        report.append(f"  counter differences: {diff(soaked_cp['counters'], ref_cp['counters'])}")
    report.append(f"total {time.monotonic() - began:.1f}s; logs in {tmp_path}")
    print("\n".join(report))

    assert pg_identical, f"{tag} Postgres differs from the reference: {diff({str(r[0]): r for r in soaked_table}, {str(r[0]): r for r in ref_table})}"
    assert ts_identical, f"{tag} Typesense differs from the reference: {diff(soaked_docs, ref_docs)}"
    assert counters_identical, f"{tag} counters differ: {diff(soaked_cp['counters'], ref_cp['counters'])}"
    assert soaked_rows == data.expected_rows(), f"{tag} Postgres: {diff(soaked_rows, data.expected_rows())}"
    assert soaked_docs == data.expected_documents(), f"{tag} Typesense: {diff(soaked_docs, data.expected_documents())}"
    assert soaked_cp["counters"] == expected_counters, f"{tag} counters: {diff(soaked_cp['counters'], expected_counters)}"
    assert ref_cp["counters"] == expected_counters, f"{tag} reference counters: {diff(ref_cp['counters'], expected_counters)}"
    for env, cp in ((soaked, soaked_cp), (reference, ref_cp)):
        assert cp["status"] == "completed" and cp["lease"] is None, f"{tag} {env['MONGO_DB_NAME']}: {cp['status']}, lease {cp['lease']}"
        assert not scratch_exists(env), f"{tag} scratch table {env['SCRATCH_TABLE']} left behind"
    assert not redone, f"{tag} completed batches logged more than once (redone): {redone}"
    assert not extra, f"{tag} batch numbers beyond the checkpoint's {total}: {extra}"
    assert not unexplained_missing, f"{tag} batch numbers never logged and not explained by a SIGKILL: {unexplained_missing}"
    assert not broken_chain, f"{tag} batches skipping or overlapping keys (batch_no, previous last_id, from_id): {broken_chain[:5]}"
    # Only a job that completed before the last instant (the soaked run going faster than the
    # reference near its end) makes fewer kills than planned; that is reported, not a failure.
    assert len(made) >= kills - 1, f"{tag} only {len(made)} of {kills} kills were made"
    assert {k.planned_phase for k in made} == set(PHASES), f"{tag} kills did not cover every phase: {[k.planned_phase for k in made]}"


def seed_for_run() -> int:
    return int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(2**32))


def test_soak_short(worker_env, tmp_path):
    soak(worker_env, tmp_path, rows=20_000, kills=5, seed=seed_for_run())


@pytest.mark.slow
def test_soak_long(worker_env, tmp_path):
    soak(worker_env, tmp_path, rows=200_000, kills=20, seed=seed_for_run())
