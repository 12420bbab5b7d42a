"""Seed 002 as a job: `codes_import`, on seed 002's tables (a schema per test), run as a real
process against real Postgres and the MongoDB stand-in."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

import psycopg
import pymongo
import pytest

from tests.integration.codes_data import codes_in, import_jobs, write_csv
from tests.integration.inventory_data import events, own_schema, run_worker, schema_connect, schema_execute, start_worker, wait_for
from tests.integration.kill_compare import assert_interruptions_change_nothing, counters_of
from worker import tables
from worker.demo_codes import FLAGS, MERCHANTS, add_existing, code_of, generate

M0, M1 = (str(m) for m in MERCHANTS)
WITH_BATCH_ID = ["merchant_id", "code", "serial", "sku", "points", "sku_name", "batch_id", "price"]
WITH_BATCH_CODE = ["code", "merchant_id", "sku", "points", "sku_name", "batch_code", "price"]  # and no serial
EXISTING = 10  # NBD0000000000 .. NBD0000000009: even numbers are M0's, odd ones M1's


def row(header: list[str], **values: str) -> list[str]:
    return [values.get("batch_code" if h == "batch_id" else h, "") for h in header]


def small_folder(folder: Path) -> dict[str, int]:
    """The seed's mix in miniature, and its ground truth (each row's verdict is commented)."""
    folder.mkdir()
    a = WITH_BATCH_ID
    write_csv(folder / "a.csv", a, [
        row(a, merchant_id=M0, code="NEW001", serial="S1", sku="SKU1", points="10", sku_name="Voucher", batch_code="B1", price="1.50"),  # clean
        row(a, merchant_id=M1, code="NBD0000000001", points="5"),  # dup_existing
        row(a, merchant_id=M0, code="NBD0000000001", points="5"),  # clean: the code is M1's, not M0's
        row(a),  # blank: every field empty
        row(a, merchant_id="not-a-uuid", code="NEW002"),  # invalid
        row(a, merchant_id=M0.upper().replace("-", ""), code="NEW003", points="+2.5e1"),  # clean: the same UUID, written otherwise
        row(a, merchant_id=M0, code="  NEW004  ", points=""),  # clean, stored as NEW004
    ])
    b = WITH_BATCH_CODE
    write_csv(folder / "b.csv", b, [
        row(b, code="NEW001", merchant_id=M0),  # dup_internal (a.csv, line 2)
        row(b, code="NBD0000000002", merchant_id=M0),  # dup_existing
        row(b, code="NBD0000000002", merchant_id=M0),  # dup_both
        row(b, code="NEW005", merchant_id=M1, points="ten"),  # invalid
        row(b, code="", merchant_id=M1),  # invalid: empty code
        [],  # blank line
        row(b, code="NEW005", merchant_id=M1, points="5"),  # clean: the earlier NEW005 was invalid
        row(b, code="NEW006", merchant_id=M1) + ["extra"],  # invalid: a field more than the header
        row(b, code="NEW004", merchant_id=f" {M0.upper()} "),  # dup_internal of a.csv's "  NEW004  "
    ])
    write_csv(folder / "c.csv", b, [])  # header only
    write_csv(folder / "d.csv", ["merchant", "code"], [[M0, "NEW099"]])  # unknown header: the file fails
    return {"clean": 5, "dup_internal": 2, "dup_existing": 2, "dup_both": 1, "invalid": 4}


SMALL_CLEAN = {(MERCHANTS[0], "NEW001"), (MERCHANTS[0], "NBD0000000001"), (MERCHANTS[0], "NEW003"), (MERCHANTS[0], "NEW004"), (MERCHANTS[1], "NEW005")}


@pytest.fixture
def env(worker_env):
    with own_schema(worker_env, "ci") as (schema, env):
        env.update(
            CODES_TABLE=f"{schema}.codes", CODES_IMPORT_JOBS_TABLE=f"{schema}.codes_import_jobs", CODES_IMPORT_STAGING=f"{schema}.codes_import",
            BATCH_SIZE="4", BATCH_SIZE_MIN="4", BATCH_SIZE_MAX="4",
        )
        reset_schema(env)
        yield env


def schema_of(env: dict[str, str]) -> str:
    return env["CODES_TABLE"].split(".")[0]


def connect(env: dict[str, str]) -> psycopg.Connection:
    return schema_connect(env, schema_of(env))


def reset_schema(env: dict[str, str], existing: int = EXISTING) -> None:
    with connect(env) as conn:
        tables.fresh_schema(conn, schema_of(env), "codes_import")
        add_existing(conn, existing)


def execute(env: dict[str, str], statement: str, *params) -> list[tuple]:
    return schema_execute(env, schema_of(env), statement, *params)


def job(folder: Path) -> list[str]:
    return ["--job", "codes_import", "--source", str(folder)]


def import_folder(env: dict[str, str], folder: Path, *flags: str) -> dict[str, int]:
    result = run_worker(env, "run", *job(folder), *flags)
    assert result.returncode == 0, result.stderr + result.stdout[-3000:]
    if "--dry-run" in flags:
        [done] = [e for e in events(result.stdout) if e.get("event") == "dry run: nothing was written"]
        return done["would"]
    status, counters = counters_of(env, job(folder))
    assert status == "completed"
    return counters


def flags(counters: dict[str, int]) -> dict[str, int]:
    return {k: counters.get(k, 0) for k in FLAGS}


def own_tables(env: dict[str, str]) -> list[str]:
    return [r[0] for r in execute(env, "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename ~ '^codes_import_(rows|files|marks)_' ORDER BY 1", schema_of(env))]


def test_flags_match_the_ground_truth_and_the_clean_codes_are_inserted_once(env, tmp_path):
    folder = tmp_path / "nbd"
    truth = small_folder(folder)
    before = codes_in(connect(env))
    counters = import_folder(env, folder)

    assert flags(counters) == truth
    assert sum(flags(counters).values()) == counters["rows_staged"] + counters["bad_rows"] == 14
    assert (counters["files_staged"], counters["files_empty"], counters["files_failed"], counters["blank_rows"]) == (2, 1, 1, 2)
    assert (counters["inserted"], counters["race_skipped"], counters["codes_verified"]) == (5, 0, 5)
    assert codes_in(connect(env)) == before | SMALL_CLEAN
    [(import_id, status, total, inserted, error)] = import_jobs(connect(env))
    assert (status, total, inserted, error) == ("completed", 5, 5, None)
    assert execute(env, "SELECT count(*) FROM codes WHERE import_job_id = %s", import_id) == [(5,)]
    assert execute(env, "SELECT points, price, serial, batch_code, source FROM codes WHERE code = 'NEW001'") == [(10, 1.5, "S1", "B1", "a.csv")]
    assert execute(env, "SELECT points FROM codes WHERE code = 'NEW003'") == [(25,)]
    assert execute(env, "SELECT validation_passed, jsonb_array_length(validation_errors), source_info->'files' FROM codes_import_jobs") == [
        (False, 4, ["a.csv", "b.csv", "c.csv", "d.csv"])
    ]
    listed = run_worker(env, "failures", *job(folder)).stdout
    [failed] = [line for line in listed.splitlines() if line.startswith("codes_import")]
    assert "\tstage\tkey='d.csv'" in failed and "unknown header 'merchant' (column 1)" in failed
    assert own_tables(env) == []  # staging cleared on completion

    # Run again: completed, nothing to do; after a reset the same folder is all duplicates.
    assert import_folder(env, folder)["inserted"] == 5
    assert run_worker(env, "reset", *job(folder), "--yes").returncode == 0
    again = import_folder(env, folder)
    assert flags(again) == {  # every valid code is in the table now: a repeat of one is both
        "clean": 0, "dup_internal": 0, "dup_existing": truth["clean"] + truth["dup_existing"],
        "dup_both": truth["dup_both"] + truth["dup_internal"], "invalid": truth["invalid"],
    }
    assert again.get("inserted", 0) == 0 and again["codes_verified"] == 0
    assert codes_in(connect(env)) == before | SMALL_CLEAN
    assert [r[1:4] for r in import_jobs(connect(env))] == [("completed", 5, 5), ("completed", 0, 0)]


def test_a_dry_run_writes_nothing_and_reports_what_the_run_would_do(env, tmp_path):
    folder = tmp_path / "nbd"
    truth = small_folder(folder)
    before = codes_in(connect(env))
    would = import_folder(env, folder, "--dry-run")
    assert flags(would) == truth and would["inserted"] == 5
    assert codes_in(connect(env)) == before
    assert import_jobs(connect(env)) == []
    assert own_tables(env) == []
    assert counters_of(env, job(folder)) == (None, {})


def test_atomic_inserts_the_same_codes_in_one_transaction(env, tmp_path):
    folder = tmp_path / "nbd"
    truth = small_folder(folder)
    before = codes_in(connect(env))
    counters = import_folder(env, folder, "--atomic")
    assert flags(counters) == truth and counters["inserted"] == 5
    assert codes_in(connect(env)) == before | SMALL_CLEAN
    assert [r[1:4] for r in import_jobs(connect(env))] == [("completed", 5, 5)]


def test_report_streams_every_row_with_its_status(env, tmp_path):
    folder = tmp_path / "nbd"
    small_folder(folder)
    env = {**env, "CODES_KEEP_STAGING": "true"}
    import_folder(env, folder)
    out = tmp_path / "report.csv"
    result = run_worker(env, "report", *job(folder), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    with out.open() as f:
        rows = list(csv.DictReader(f))
    by_line = {(r["file"], int(r["line"])): r["status"] for r in rows}
    assert by_line == {
        ("a.csv", 2): "CLEAN", ("a.csv", 3): "DATABASE_DUPLICATE", ("a.csv", 4): "CLEAN", ("a.csv", 6): "INVALID", ("a.csv", 7): "CLEAN",
        ("a.csv", 8): "CLEAN", ("b.csv", 2): "INTERNAL_DUPLICATE", ("b.csv", 3): "DATABASE_DUPLICATE", ("b.csv", 4): "BOTH_DUPLICATE",
        ("b.csv", 5): "INVALID", ("b.csv", 6): "INVALID", ("b.csv", 8): "CLEAN", ("b.csv", 9): "INVALID", ("b.csv", 10): "INTERNAL_DUPLICATE",
    }
    problems = {(r["file"], int(r["line"])): r["problem"] for r in rows if r["status"] == "INVALID"}
    assert problems[("a.csv", 6)] == "merchant_id is not a UUID: 'not-a-uuid'"
    assert problems[("b.csv", 5)] == "points is not a number: 'ten'"
    assert problems[("b.csv", 6)] == "code is empty"
    assert problems[("b.csv", 9)] == "8 fields where the header has 7"

    dups = tmp_path / "dups.csv"
    assert run_worker(env, "report", *job(folder), "--out", str(dups), "--duplicates-only").returncode == 0
    with dups.open() as f:
        assert sorted(r["status"] for r in csv.DictReader(f)) == sorted(["DATABASE_DUPLICATE"] * 2 + ["INTERNAL_DUPLICATE"] * 2 + ["BOTH_DUPLICATE"])


def test_report_without_staging_says_why(env, tmp_path):
    folder = tmp_path / "nbd"
    small_folder(folder)
    import_folder(env, folder)  # staging dropped on completion
    result = run_worker(env, "report", *job(folder), "--out", str(tmp_path / "r.csv"))
    assert result.returncode == 1 and "CODES_KEEP_STAGING=true keeps them" in result.stderr
    assert not (tmp_path / "r.csv").exists()


def test_a_missing_table_says_what_the_job_needs_it_for_and_where_its_definition_is(env, tmp_path):
    folder = tmp_path / "nbd"
    small_folder(folder)
    schema = schema_of(env)
    result = run_worker({**env, "CODES_TABLE": f"{schema}.nowhere"}, "run", *job(folder))
    assert result.returncode == 5
    assert (f'table "{schema}"."nowhere" does not exist: job codes_import needs its codes table'
            f" (CODES_TABLE; definition: {tables.shown('codes_import')})") in result.stderr
    assert tables.path("codes_import").is_file() and "seed" not in result.stderr.lower()


def test_a_missing_folder_says_where_it_was_looked_up_and_how_files_get_there(env, tmp_path):
    result = run_worker(env, "run", *job(tmp_path / "codes"))
    assert result.returncode == 2, "a configuration error: no restart finds the files"
    assert f"{tmp_path / 'codes'}: no such file or directory (looked up in the worker's own filesystem" in result.stderr
    assert "--source /data/codes)" in result.stderr


def test_rollback_keeps_claimed_codes_unless_told_and_leaves_other_codes_alone(env, tmp_path):
    folder = tmp_path / "nbd"
    small_folder(folder)
    before = codes_in(connect(env))
    import_folder(env, folder)
    [(import_id, *_)] = import_jobs(connect(env))
    execute(env, "UPDATE codes SET claimed = true WHERE code IN ('NEW001', 'NEW005')")
    rollback = ["rollback", "--job", "codes_import", "--import-job-id", str(import_id)]

    refused = run_worker(env, *rollback)
    assert refused.returncode == 2 and "--yes is required" in refused.stderr
    dry = run_worker(env, *rollback, "--dry-run", "--json")
    assert dry.returncode == 0 and '"would_delete": 3' in dry.stdout
    assert codes_in(connect(env)) == before | SMALL_CLEAN

    first = run_worker(env, *rollback, "--yes", "--json")
    assert first.returncode == 0, first.stderr
    assert '"deleted": 3' in first.stdout and '"kept_claimed": 2' in first.stdout and '"NEW001"' in first.stdout
    assert codes_in(connect(env)) == before | {(MERCHANTS[0], "NEW001"), (MERCHANTS[1], "NEW005")}
    [(_, status, _, _, error)] = import_jobs(connect(env))
    assert status == "completed" and "kept 2 claimed" in error

    second = run_worker(env, *rollback, "--yes", "--include-claimed", "--json")
    assert second.returncode == 0 and '"deleted": 2' in second.stdout
    assert codes_in(connect(env)) == before
    assert [r[1] for r in import_jobs(connect(env))] == ["rolled_back"]
    assert execute(env, "SELECT count(*) FROM codes_import_jobs WHERE rolled_back_at IS NOT NULL") == [(1,)]

    unknown = run_worker(env, "rollback", "--job", "codes_import", "--import-job-id", str(uuid.uuid4()), "--yes")
    assert unknown.returncode == 2 and "names no import" in unknown.stderr


def test_codes_inserted_by_others_during_insert_are_race_skipped(env, tmp_path):
    folder = tmp_path / "gen"
    data = generate(folder, rows=600, files=3, existing=EXISTING)
    env = {**env, "SLEEP_BETWEEN_BATCHES": "0.05", "BATCH_SIZE": "20", "BATCH_SIZE_MIN": "20", "BATCH_SIZE_MAX": "20"}
    log_path = tmp_path / "run.log"
    proc = start_worker(env, "run", *job(folder), log_path=log_path)
    wait_for(lambda: '"phase": "insert"' in log_path.read_text(), timeout=60, what="the insert phase")
    # Others insert the last clean codes of the files, which the job reaches last.
    late = sorted(data.clean, key=lambda c: c[1])[-25:]
    execute(env, "INSERT INTO codes (merchant_id, code, source) SELECT * , 'app' FROM unnest(%s::uuid[], %s::text[])", [m for m, _ in late], [c for _, c in late])
    assert proc.wait(timeout=120) == 0, log_path.read_text()[-3000:]
    status, counters = counters_of(env, job(folder))
    assert status == "completed"
    assert counters["race_skipped"] == 25 and counters["inserted"] == len(data.clean) - 25
    [(import_id, status, total, inserted, _)] = import_jobs(connect(env))
    assert (status, total, inserted) == ("completed", len(data.clean), len(data.clean) - 25)
    assert execute(env, "SELECT count(*) FROM codes WHERE import_job_id = %s", import_id) == [(len(data.clean) - 25,)]


def test_random_kills_in_every_phase_end_with_the_codes_of_one_run(env, tmp_path):
    folder = tmp_path / "gen"
    data = generate(folder, rows=2000, files=4, existing=500)

    def prepare(e: dict[str, str]) -> None:
        reset_schema(e, existing=500)
        with pymongo.MongoClient(e["MONGO_URI"]) as client:
            client.drop_database(e["MONGO_DB_NAME"])

    def state(e: dict[str, str]) -> tuple:
        with connect(e) as conn:
            jobs = [r[1:4] for r in import_jobs(conn)]
            stamped = conn.execute("SELECT count(*) FROM codes WHERE import_job_id IS NOT NULL").fetchone()
            return codes_in(conn), jobs, stamped, own_tables(e)

    env = {**env, "SLEEP_BETWEEN_BATCHES": "0.02", "BATCH_SIZE": "50", "BATCH_SIZE_MIN": "50", "BATCH_SIZE_MAX": "50"}
    baseline, _ = assert_interruptions_change_nothing(env, job(folder), prepare=prepare, state=state, log_dir=tmp_path / "runs", kills=4)
    codes, jobs, stamped, tables = baseline.state
    assert flags(baseline.counters) == data.truth
    assert jobs == [("completed", len(data.clean), len(data.clean))] and stamped == (len(data.clean),) and tables == []
    assert codes == {code_of(n) for n in range(500)} | data.clean
