"""The example job `tally`, run as a real process on real servers: each engine capability a job
may use (run parameters, steps, a verify step, a file source, a filtered and a grouped keyset, a
verb, a dry run), with no Typesense setting in its environment at all."""

from __future__ import annotations

import json
import random
import signal
from collections import defaultdict
from pathlib import Path

import pymongo
import pytest
from psycopg import sql

from tests.integration.inventory_data import events, pg_connect, run_worker, start_worker, wait_for
from tests.integration.kill_compare import assert_interruptions_change_nothing, counters_of


@pytest.fixture
def env(worker_env):
    """The worker's environment without one Typesense variable, and tables of its own."""
    prefix = f"tally_{worker_env['MONGO_DB_NAME']}"
    env = {k: v for k, v in worker_env.items() if not k.startswith("TYPESENSE_")}
    env.update(TALLY_TABLES=f"public.{prefix}", BATCH_SIZE="7", BATCH_SIZE_MIN="1", BATCH_SIZE_MAX="7")
    yield env
    with pg_connect(worker_env) as conn:
        for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (prefix + "%",)).fetchall():
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("public", name)))


def write_readings(path: Path, groups: int, per_group: int = 3, seed: int = 1, bad: bool = True) -> dict[int, tuple[int, int]]:
    """A JSON Lines file whose groups are spread over it (group = line % groups), a few lines it
    cannot use, and the totals it must give: group -> (readings, total)."""
    rng = random.Random(seed)
    expected: dict[int, list[int]] = defaultdict(list)
    lines = []
    for i in range(groups * per_group):
        group, value = i % groups, rng.randint(-1000, 1000)
        expected[group].append(value)
        lines.append(json.dumps({"group": group, "value": value}))
    if bad:
        lines[5:5] = ['{"group": 1, "value": "lots"}', "not json", "", '{"group": "x", "value": 2}']
    path.write_text("\n".join(lines) + "\n")
    return {g: (len(v), sum(v)) for g, v in expected.items()}


def totals(env: dict[str, str], run: str | None = None) -> dict[int, tuple[int, int]]:
    name = sql.Identifier("public", totals_name(env))
    with pg_connect(env) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"public.{totals_name(env)}",)).fetchone()[0] is None:
            return {}
        rows = conn.execute(
            sql.SQL("SELECT run, grp, readings, total FROM {} ORDER BY run, grp").format(name)
        ).fetchall()
    return {g: (n, int(t)) for r, g, n, t in rows if run is None or r == run}


def totals_name(env: dict[str, str]) -> str:
    return env["TALLY_TABLES"].split(".")[1] + "_totals"


def job_tables(env: dict[str, str]) -> list[str]:
    prefix = env["TALLY_TABLES"].split(".")[1]
    with pg_connect(env) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s ORDER BY 1", (prefix + "%",))]


def status(env: dict[str, str], *args: str) -> list[dict]:
    result = run_worker(env, "status", "--job", "tally", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.startswith("[") else []


def test_a_postgres_only_job_runs_without_any_typesense_setting(env, tmp_path):
    source = tmp_path / "readings.jsonl"
    expected = write_readings(source, groups=20)  # 60 good lines in groups of 3, batches of 7

    result = run_worker(env, "run", "--job", "tally", "--source", str(source))

    assert result.returncode == 0, result.stderr
    [report] = status(env, "--source", str(source))
    assert report["status"] == "completed" and report["params"] == {"TALLY_SOURCE": str(source)}
    counters = json.loads(report["counters"])
    assert counters == {
        "files_staged": 1, "files_empty": 0, "files_failed": 0, "files_duplicate": 0,
        "rows_staged": 62, "blank_rows": 1, "bad_rows": 1,
        "rejected": 3, "failures": 3, "readings": 60, "groups": 20, "groups_checked": 20,
    }
    assert totals(env) == expected
    # The filtered keyset met only the unusable lines: each is a failure named file:line.
    listed = run_worker(env, "failures", "--job", "tally", "--source", str(source))
    assert sorted(line.split("\t")[2] for line in listed.stdout.splitlines() if line.startswith("tally:")) == [
        "key='readings.jsonl:6'", "key='readings.jsonl:7'", "key='readings.jsonl:9'",
    ]


def test_a_grouped_batch_never_splits_a_group_whatever_the_batch_size(env, tmp_path):
    source = tmp_path / "readings.jsonl"
    expected = write_readings(source, groups=50, per_group=4, bad=False)  # 4 rows a group, batches of 7

    result = run_worker(env, "run", "--job", "tally", "--source", str(source))

    assert result.returncode == 0, result.stderr
    assert totals(env) == expected
    batches = [e["batch_rows"] for e in events(result.stdout) if e.get("event") == "batch" and e.get("phase") == "totals"]
    assert batches and all(rows % 4 == 0 for rows in batches), batches
    assert any(rows > 7 for rows in batches), batches  # completed to the end of the last group


def test_another_source_is_another_run_and_the_same_source_resumes_its_own(env, tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    expected_first = write_readings(first, groups=5, seed=1, bad=False)
    expected_second = write_readings(second, groups=8, seed=2, bad=False)

    assert run_worker(env, "run", "--job", "tally", "--source", str(first)).returncode == 0
    again = run_worker(env, "--job", "tally", "--source", str(first))  # `run` is the default command
    assert run_worker(env, "run", "--job", "tally", "--source", str(second)).returncode == 0

    assert any(e.get("event") == "already completed; nothing to do" for e in events(again.stdout))
    runs = {tuple(r["params"].values()): r for r in status(env)}
    assert set(runs) == {(str(first),), (str(second),)} and all(r["status"] == "completed" for r in runs.values())
    assert runs[(str(first),)]["checkpoint"] != runs[(str(second),)]["checkpoint"]
    assert {r["job"] for r in runs.values()} == {"tally"}
    report = json.loads(run_worker(env, "report", "--job", "tally", "--source", str(second), "--json").stdout)
    assert (report["groups"], report["readings"]) == (8, 24)
    first_run = json.loads(run_worker(env, "--job", "tally", "--source", str(first), "report", "--json").stdout)["run"]
    assert first_run != report["run"] and totals(env, first_run) == expected_first
    assert {int(g): (v["readings"], v["total"]) for g, v in report["by_group"].items()} == expected_second
    one = json.loads(run_worker(env, "report", "--job", "tally", "--source", str(second), "--group", "3", "--json").stdout)
    assert one["by_group"] == {"3": {"readings": 3, "total": expected_second[3][1]}}


def test_a_dry_run_writes_nothing_and_reports_what_it_would_do(env, tmp_path):
    source = tmp_path / "readings.jsonl"
    write_readings(source, groups=10)

    result = run_worker(env, "run", "--job", "tally", "--source", str(source), "--dry-run")

    assert result.returncode == 0, result.stderr
    assert job_tables(env) == []  # no staging table, no ledger, no totals: pg_temp only
    assert status(env) == []  # no checkpoint
    with pymongo.MongoClient(env["MONGO_URI"]) as client:
        assert client[env["MONGO_DB_NAME"]]["inventory_backfill_failures"].count_documents({}) == 0
    [done] = [e for e in events(result.stdout) if e.get("event") == "dry run: nothing was written"]
    assert done["would"]["readings"] == 30 and done["would"]["groups"] == 10 and done["would"]["rejected"] == 3
    assert any(e.get("event", "").startswith("dry run: verify step skipped") for e in events(result.stdout))


def test_a_verify_step_that_finds_a_mismatch_fails_the_run_until_the_cause_is_fixed(env, tmp_path):
    source = tmp_path / "readings.jsonl"
    expected = write_readings(source, groups=6, bad=False)
    totals_table, breaker = sql.Identifier("public", totals_name(env)), sql.Identifier(totals_name(env) + "_break")
    with pg_connect(env) as conn:  # the table as the job creates it, with an application trigger that breaks group 4
        conn.execute(sql.SQL(
            "CREATE TABLE {} (run text, grp bigint, readings bigint NOT NULL, total numeric NOT NULL, PRIMARY KEY (run, grp))"
        ).format(totals_table))
        conn.execute(sql.SQL(
            "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.grp = 4 THEN NEW.total := NEW.total + 1; END IF; RETURN NEW; END $$"
        ).format(breaker))
        conn.execute(sql.SQL("CREATE TRIGGER break BEFORE INSERT OR UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
            totals_table, breaker))

    failed = run_worker(env, "run", "--job", "tally", "--source", str(source))

    assert failed.returncode == 8, failed.stderr
    [line] = failed.stderr.splitlines()
    assert line.startswith("error: VerificationFailed: 1 of 6 groups disagree") and "group 4: file 3/" in line, line
    [report] = status(env)
    assert report["status"] == "failed" and report["phase"] == "check" and "group 4" in report["error"]

    with pg_connect(env) as conn:
        conn.execute(sql.SQL("DROP TRIGGER break ON {}").format(totals_table))
        conn.execute(sql.SQL("DROP FUNCTION {}").format(breaker))
        conn.execute(sql.SQL("UPDATE {} SET total = total - 1 WHERE grp = 4").format(totals_table))  # the data repaired
    fixed = run_worker(env, "run", "--job", "tally", "--source", str(source))
    assert fixed.returncode == 0, fixed.stderr
    assert status(env)[0]["status"] == "completed" and totals(env) == expected


def test_a_stage_killed_mid_file_is_redone_whole(env, tmp_path):
    source = tmp_path / "big.jsonl"
    expected = write_readings(source, groups=1000, per_group=200, bad=False)  # 200,000 lines
    env = {**env, "BATCH_SIZE": "5000", "BATCH_SIZE_MAX": "5000"}
    staging_like = env["TALLY_TABLES"].split(".")[1] + "_stage_%"
    proc = start_worker(env, "run", "--job", "tally", "--source", str(source), log_path=tmp_path / "killed.log")

    def copying() -> bool:
        with pg_connect(env) as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY %%' AND query LIKE %s", ("%" + staging_like[:-1] + "%",)
            ).fetchone()[0] > 0

    wait_for(copying, timeout=60, interval=0.01, what="the COPY of the file")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with pg_connect(env) as conn:  # nothing of the file: its transaction died with the worker
        staged = [t for t in job_tables(env) if "_stage_" in t]
        assert all(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0] == 0 for t in staged)

    result = run_worker(env, "run", "--job", "tally", "--source", str(source), timeout=300)

    assert result.returncode == 0, result.stderr
    status_, counters = counters_of(env, ["--job", "tally", "--source", str(source)])
    assert status_ == "completed" and counters["rows_staged"] == 200_000 and counters["files_staged"] == 1
    assert totals(env) == expected


def test_random_kills_change_neither_the_totals_nor_the_counters(env, tmp_path):
    source = tmp_path / "readings.jsonl"
    write_readings(source, groups=400, per_group=5)

    def prepare(e: dict[str, str]) -> None:
        with pg_connect(e) as conn:
            for t in job_tables(e):
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("public", t)))
        with pymongo.MongoClient(e["MONGO_URI"]) as client:
            client.drop_database(e["MONGO_DB_NAME"])

    env = {**env, "BATCH_SIZE": "50", "BATCH_SIZE_MAX": "50", "SLEEP_BETWEEN_BATCHES": "0.05"}
    assert_interruptions_change_nothing(
        env, ["--job", "tally", "--source", str(source)], prepare=prepare, state=totals, log_dir=tmp_path / "runs", kills=4
    )


def test_a_bad_run_parameter_is_one_configuration_line(env):
    result = run_worker(env, "run", "--job", "tally")
    assert result.returncode == 2 and result.stderr.strip() == (
        'configuration error: TALLY_SOURCE is required: JSON Lines file of readings, one {"group": int, "value": int} per line.'
    )
