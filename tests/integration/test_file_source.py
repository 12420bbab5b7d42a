"""The file source on a real Postgres: each reader's rows as staged, exactly-once staging across a
stop or a lost connection mid-file, the ledger's skips and refusals, and a dry run that stages
into pg_temp only."""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql

from tests.integration.inventory_data import pg_connect
from worker.config import TableName, load_settings
from worker.exceptions import SourceChanged
from worker.file_source import CsvFiles, FileSource, JsonLines, ResearchJson
from worker.job import Failure, JobContext
from worker.resources import Resources
from worker.stop import StopFlag, StopRequested

FACTS = {"poi_id": "text", "area_id": "text", "topic": "text", "fact_text": "text", "structured_data": "jsonb", "sort_order": "text"}
CODES = ["code", "merchant_id", "serial", "batch_id", "points"]
CODE_ALIASES = {"batch_code": "batch_id"}


@pytest.fixture
def tables(worker_env) -> Iterator[dict[str, TableName]]:
    u = uuid.uuid4().hex[:8]
    names = {"staging": TableName("public", f"fs_staging_{u}"), "ledger": TableName("public", f"fs_ledger_{u}")}
    yield names
    with pg_connect(worker_env) as conn:
        for t in names.values():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(t.schema, t.name)))


@contextlib.contextmanager
def job_context(env: dict[str, str], dry_run: bool = False, stop: StopFlag | None = None) -> Iterator[JobContext]:
    with Resources.open(load_settings(env, dry_run=dry_run)) as resources:
        yield resources.job_context(stop or StopFlag())


def rows(env: dict[str, str], table: TableName, columns: str = "*", order: str = "seq") -> list[tuple]:
    with pg_connect(env) as conn:
        return conn.execute(
            sql.SQL("SELECT {} FROM {} ORDER BY {}").format(sql.SQL(columns), sql.Identifier(table.schema, table.name), sql.SQL(order))
        ).fetchall()


def ledger(env: dict[str, str], tables: dict[str, TableName]) -> dict[str, dict[str, Any]]:
    with pg_connect(env) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        t = tables["ledger"]
        cur.execute(sql.SQL("SELECT * FROM {} ORDER BY path").format(sql.Identifier(t.schema, t.name)))
        return {r["path"]: r for r in cur.fetchall()}


def relation_exists(env: dict[str, str], table: TableName) -> bool:
    with pg_connect(env) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{table.schema}.{table.name}",)).fetchone()[0]


# -- each reader's rows, as staged -------------------------------------------------------------


def test_a_json_lines_file_is_staged_with_blank_lines_counted_and_bad_lines_kept_as_bad_rows(worker_env, tables, tmp_path):
    source = tmp_path / "facts.jsonl"
    lines = [
        {"poi_id": "google-1", "topic": "history", "fact_text": "Fra 1700-tallet.", "structured_data": {"år": 1700}, "sort_order": 2},
        "",
        '{"poi_id": "google-1", "topic": ',
        '["not", "an", "object"]',
        {"area_id": "trondheim", "topic": "nature", "text": "Nidelva renner gjennom byen.", "source_url": "https://x"},
        {"poi_id": "google-2", "topic": "food", "fact_text": "Nul\u0000byte"},
        {"poi_id": "google-3", "topic": "food", "fact_text": "Æøå", "structured_data": "just text"},
        "   ",
    ]
    source.write_text("\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines) + "\n")
    with job_context(worker_env) as ctx:
        report = FileSource(ctx, source, JsonLines(), columns=FACTS, aliases={"text": "fact_text"}, **tables).stage()

    assert report.recorded == ["facts.jsonl"] and report.failures == []
    assert report.counters == {
        "files_staged": 1, "files_empty": 0, "files_failed": 0, "files_duplicate": 0,
        "rows_staged": 3, "blank_rows": 2, "bad_rows": 3,
    }
    staged = rows(worker_env, tables["staging"], "seq, file, line, poi_id, area_id, topic, fact_text, structured_data, sort_order, error")
    assert [r[:3] for r in staged] == [(1, "facts.jsonl", 1), (2, "facts.jsonl", 3), (3, "facts.jsonl", 4),
                                       (4, "facts.jsonl", 5), (5, "facts.jsonl", 6), (6, "facts.jsonl", 7)]
    by_line = {r[2]: r[3:] for r in staged}
    assert by_line[1] == ("google-1", None, "history", "Fra 1700-tallet.", {"år": 1700}, "2", None)
    assert by_line[3][:6] == (None,) * 6 and by_line[3][6].startswith("not JSON: ")
    assert by_line[4] == (None,) * 6 + ("not a JSON object but an array",)
    # the alias `text` is fact_text; missing columns are NULL; an unknown key is ignored
    assert by_line[5] == (None, "trondheim", "nature", "Nidelva renner gjennom byen.", None, None, None)
    assert by_line[6] == (None,) * 6 + ("column fact_text holds a NUL character, which Postgres cannot store",)
    assert by_line[7] == ("google-3", None, "food", "Æøå", "just text", None, None)
    [entry] = ledger(worker_env, tables).values()
    assert (entry["status"], entry["rows"], entry["blank_rows"], entry["bad_rows"], entry["first_seq"], entry["last_seq"]) == (
        "staged", 3, 2, 3, 1, 6)
    assert entry["size"] == source.stat().st_size and len(entry["sha256"]) == 64 and entry["error"] is None


def test_a_research_directory_becomes_one_row_per_fact_and_skips_its_manifest(worker_env, tables, tmp_path):
    def write(name: str, doc: Any) -> None:
        (tmp_path / name).write_text(doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False))

    write("manifest.json", {"files": ["a.json", "b.json"], "facts": [{"topic": "history", "fact_text": "Not a fact."}]})
    write("a.json", {"poi_id": "google-1", "name": "Antikvariatet", "facts": [
        {"topic": "history", "fact_text": "Fra 1700-tallet.", "confidence": "verified"},
        42,
        {"topic": "food", "fact_text": "Serverer mat.", "sort_order": 3},
    ]})
    write("b.json", {"area_id": "bakklandet", "facts": [{"topic": "culture", "fact_text": "Sykkelheisen."}]})
    write("c.json", '{"poi_id": "google-3", "facts": [')
    write("d.json", {"poi_id": "google-4", "facts": []})
    write("e.json", {"poi_id": "google-5", "facts": [{"topic": "people", "fact_text": "Etter feilen."}]})

    with job_context(worker_env) as ctx:
        report = FileSource(ctx, tmp_path, ResearchJson(), columns=FACTS, **tables).stage()

    entries = ledger(worker_env, tables)
    assert list(entries) == ["a.json", "b.json", "c.json", "d.json", "e.json"]  # no manifest.json
    assert {p: e["status"] for p, e in entries.items()} == {
        "a.json": "staged", "b.json": "staged", "c.json": "failed", "d.json": "empty", "e.json": "staged"}
    assert entries["c.json"]["error"].startswith("not JSON: ") and entries["c.json"]["rows"] == 0
    assert report.failures == [Failure("c.json", entries["c.json"]["error"])]
    assert rows(worker_env, tables["staging"], "seq, file, line, poi_id, area_id, topic, fact_text, sort_order, error") == [
        (1, "a.json", 1, "google-1", None, "history", "Fra 1700-tallet.", None, None),
        (2, "a.json", 2, None, None, None, None, None, "fact is not a JSON object but a number"),
        (3, "a.json", 3, "google-1", None, "food", "Serverer mat.", "3", None),
        (4, "b.json", 1, None, "bakklandet", "culture", "Sykkelheisen.", None, None),
        (5, "e.json", 1, "google-5", None, "people", "Etter feilen.", None, None),
    ]


def write_codes(root: Path) -> dict[str, str]:
    files = {
        "a.csv": "code,merchant_id,serial,batch_id,points\nA1,m1,s1,B1,10\nA2,m1,s2,B1,20\n",
        # the other header variant, no serial, blank rows, a header with spaces and capitals, CRLF
        "b.csv": "Code , merchant_id,batch_code,points\r\nB1,m2,B9,5\r\n\r\n,,,\r\nB2,m2,,\r\n",
        "c.csv": "code,merchant_id,batch_code\n",
        "d.csv": "code,merchant,points\nD1,m1,1\n",
        "e.csv": "merchant_id,code\nm3,E1\nm3\n",
    }
    for name, text in files.items():
        (root / name).write_bytes(text.encode())
    return files


def test_csv_files_are_mapped_by_header_and_an_unknown_header_fails_only_its_file(worker_env, tables, tmp_path):
    write_codes(tmp_path)
    with job_context(worker_env) as ctx:
        report = FileSource(ctx, tmp_path, CsvFiles(), columns=CODES, aliases=CODE_ALIASES, **tables).stage()

    entries = ledger(worker_env, tables)
    assert {p: (e["status"], e["rows"], e["blank_rows"], e["bad_rows"]) for p, e in entries.items()} == {
        "a.csv": ("staged", 2, 0, 0),
        "b.csv": ("staged", 2, 2, 0),
        "c.csv": ("empty", 0, 0, 0),  # header-only
        "d.csv": ("failed", 0, 0, 0),
        "e.csv": ("staged", 1, 0, 1),  # after the failed file: the others go on
    }
    assert entries["d.csv"]["error"].startswith("unknown header 'merchant' (column 2); known: ")
    assert report.failures == [Failure("d.csv", entries["d.csv"]["error"])]
    assert report.counters["files_empty"] == 1 and report.counters["files_failed"] == 1
    assert rows(worker_env, tables["staging"], "seq, file, line, code, merchant_id, serial, batch_id, points, error") == [
        (1, "a.csv", 2, "A1", "m1", "s1", "B1", "10", None),
        (2, "a.csv", 3, "A2", "m1", "s2", "B1", "20", None),
        (3, "b.csv", 2, "B1", "m2", None, "B9", "5", None),  # batch_code is batch_id; serial is NULL
        (4, "b.csv", 5, "B2", "m2", None, None, None, None),  # an empty field is NULL
        (5, "e.csv", 2, "E1", "m3", None, None, None, None),
        (6, "e.csv", 3, None, None, None, None, None, "1 fields where the header has 2"),
    ]


def test_a_value_a_typed_column_refuses_fails_its_file_not_the_others(worker_env, tables, tmp_path):
    (tmp_path / "a.csv").write_text("code,points\nA1,10\n")
    (tmp_path / "b.csv").write_text("code,points\n\nB1,1\nB2,ten\n")
    with job_context(worker_env) as ctx:
        report = FileSource(ctx, tmp_path, CsvFiles(), columns={"code": "text", "points": "numeric"}, **tables).stage()
    assert [e.status for e in report.entries] == ["staged", "failed"]
    assert report.failures == [Failure("b.csv", 'line 4, column points: refused by Postgres: invalid input syntax for type numeric: "ten"')]
    assert rows(worker_env, tables["staging"], "code, points") == [("A1", 10)]


# -- exactly once ------------------------------------------------------------------------------


class Watched:
    """A reader that counts the rows it yields per file (files are read in order) and calls
    `act` once, after `after` rows of the `nth` file read (1-based)."""

    def __init__(self, inner: Any, nth: int, after: int, act: Any):
        self.inner, self.nth, self.after, self.act = inner, nth, after, act
        self.yielded: list[int] = []

    def files(self, root: Path) -> list[Path]:
        return self.inner.files(root)

    def read(self, stream, columns, tally):
        self.yielded.append(0)
        for item in self.inner.read(stream, columns, tally):
            self.yielded[-1] += 1
            yield item
            if len(self.yielded) == self.nth and self.yielded[-1] == self.after:
                self.act()


def write_numbered(root: Path, sizes: dict[str, int]) -> list[tuple[str, int, str]]:
    """CSV files of `code` rows; the (file, line, code) every row must be staged as, in order."""
    expected = []
    for name, n in sizes.items():
        codes = [f"{name[0]}{i}" for i in range(n)]
        (root / name).write_text("code\n" + "".join(f"{c}\n" for c in codes))
        expected += [(name, line, code) for line, code in enumerate(codes, 2)]
    return expected


def assert_staged_exactly_once(env, tables, expected, source: FileSource | None = None) -> None:
    staged = rows(env, tables["staging"], "seq, file, line, code")
    assert [r[1:] for r in staged] == expected  # every row once, in (file, line) order by seq
    seqs = [r[0] for r in staged]
    assert seqs == list(range(1, len(expected) + 1))  # strictly increasing, no gap
    if source is not None:  # and a keyset walk over seq, page by page, meets the same rows
        query, walked, after = source.keyset(["file", "line", "code"]), [], None
        conn = source.ctx.pg.connection()
        while page := query.page(conn, after, 4):
            walked += [r[1:] for r in page]
            after = page[-1][0]
        assert walked == expected and after == source.last_seq()


def test_a_stop_mid_file_rolls_that_file_back_and_staging_again_finishes_every_row_once(worker_env, tables, tmp_path):
    expected = write_numbered(tmp_path, {"a.csv": 5, "b.csv": 25, "c.csv": 4})
    stop = StopFlag()
    watched = Watched(CsvFiles(), nth=2, after=7, act=lambda: stop.request("test"))
    with job_context(worker_env, stop=stop) as ctx:
        with pytest.raises(StopRequested):
            FileSource(ctx, tmp_path, watched, columns=["code"], chunk_rows=3, **tables).stage()
    # The stop came after 7 rows of b.csv and was honoured at the next chunk (row 9), mid-file.
    assert watched.yielded == [5, 9]
    assert list(ledger(worker_env, tables)) == ["a.csv"]
    assert [r[0] for r in rows(worker_env, tables["staging"], "file")] == ["a.csv"] * 5

    with job_context(worker_env) as ctx:
        source = FileSource(ctx, tmp_path, CsvFiles(), columns=["code"], chunk_rows=3, **tables)
        report = source.stage()
        assert (report.recorded, report.skipped) == (["b.csv", "c.csv"], ["a.csv"])
        assert report.counters["rows_staged"] == len(expected) == source.count()
        assert_staged_exactly_once(worker_env, tables, expected, source)
    entries = ledger(worker_env, tables)
    assert [(e["first_seq"], e["last_seq"]) for e in entries.values()] == [(1, 5), (6, 30), (31, 34)]


def test_a_connection_lost_mid_file_leaves_nothing_of_it_and_staging_again_resumes(worker_env, tables, tmp_path):
    expected = write_numbered(tmp_path, {"a.csv": 3, "b.csv": 50_000, "c.csv": 2})
    with job_context(worker_env) as ctx:
        pid = ctx.pg.connection().info.backend_pid

        def kill_session() -> None:
            with pg_connect(worker_env) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

        watched = Watched(CsvFiles(), nth=2, after=1000, act=kill_session)
        source = FileSource(ctx, tmp_path, watched, columns=["code"], chunk_rows=100, **tables)
        with pytest.raises(psycopg.OperationalError):
            source.stage()
        assert 1000 <= watched.yielded[1] < 50_000  # it broke off mid-file
        assert list(ledger(worker_env, tables)) == ["a.csv"]
        assert len(rows(worker_env, tables["staging"])) == 3

        report = source.stage()  # as a retry would: the same source, a new connection
        assert (report.recorded, report.skipped) == (["b.csv", "c.csv"], ["a.csv"])
        assert_staged_exactly_once(worker_env, tables, expected, source)


def test_staging_again_skips_staged_files_and_a_copy_or_rename_of_one(worker_env, tables, tmp_path):
    expected = write_numbered(tmp_path, {"a.csv": 3, "b.csv": 2})
    with job_context(worker_env) as ctx:
        source = FileSource(ctx, tmp_path, CsvFiles(), columns=["code"], **tables)
        first = source.stage()
        again = source.stage()
        assert (again.recorded, again.skipped) == ([], ["a.csv", "b.csv"])
        assert again.entries == first.entries
        assert_staged_exactly_once(worker_env, tables, expected)

        shutil.copy(tmp_path / "a.csv", tmp_path / "a_copy.csv")
        (tmp_path / "b.csv").rename(tmp_path / "z.csv")
        report = source.stage()
    assert (report.recorded, report.skipped, report.missing) == (["a_copy.csv", "z.csv"], ["a.csv"], ["b.csv"])
    entries = ledger(worker_env, tables)
    assert {p: (e["status"], e["duplicate_of"], e["rows"]) for p, e in entries.items()} == {
        "a.csv": ("staged", None, 3), "a_copy.csv": ("duplicate", "a.csv", 0),
        "b.csv": ("staged", None, 2), "z.csv": ("duplicate", "b.csv", 0),
    }
    assert_staged_exactly_once(worker_env, tables, expected)
    assert report.counters["files_duplicate"] == 2 and report.counters["rows_staged"] == 5


def test_a_changed_staged_file_is_an_error_naming_it_and_nothing_more_is_staged(worker_env, tables, tmp_path):
    expected = write_numbered(tmp_path, {"a.csv": 3, "b.csv": 2})
    with job_context(worker_env) as ctx:
        source = FileSource(ctx, tmp_path, CsvFiles(), columns=["code"], **tables)
        source.stage()
        before = ledger(worker_env, tables)
        (tmp_path / "b.csv").write_text("code\nb0\nb1\nb2\n")
        (tmp_path / "a_new.csv").write_text("code\nn0\n")  # staged before b.csv, were it not refused first
        with pytest.raises(SourceChanged) as changed:
            source.stage()
    assert "b.csv (staged with sha256 " in str(changed.value) and "a.csv" not in str(changed.value)
    assert ledger(worker_env, tables) == before
    assert_staged_exactly_once(worker_env, tables, expected)


def test_a_failed_file_once_fixed_is_staged(worker_env, tables, tmp_path):
    (tmp_path / "a.csv").write_text("code,merchant\nA1,m1\n")
    (tmp_path / "b.csv").write_text("code\nB1\n")
    with job_context(worker_env) as ctx:
        source = FileSource(ctx, tmp_path, CsvFiles(), columns=CODES, **tables)
        assert [e.status for e in source.stage().entries] == ["failed", "staged"]
        assert source.stage().skipped == ["a.csv", "b.csv"]  # unchanged, its failure stands
        (tmp_path / "a.csv").write_text("code,merchant_id\nA1,m1\n")
        report = source.stage()
    assert [(e.path, e.status, e.error) for e in report.entries] == [("a.csv", "staged", None), ("b.csv", "staged", None)]
    # staged after b.csv: a fixed file's rows come after everything staged before it
    assert rows(worker_env, tables["staging"], "seq, file, code") == [(1, "b.csv", "B1"), (2, "a.csv", "A1")]


# -- dry run -----------------------------------------------------------------------------------


def test_a_dry_run_stages_into_pg_temp_and_writes_no_real_table(worker_env, tables, tmp_path):
    expected = write_numbered(tmp_path, {"a.csv": 4, "b.csv": 3})
    (tmp_path / "c.csv").write_text("code,merchant\n")  # a failure is recorded in pg_temp too
    names = [t.name for t in tables.values()]

    def catalog() -> list[tuple[str, str]]:
        with pg_connect(worker_env) as conn:
            return conn.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relname = ANY(%s) OR c.relname LIKE ANY(%s)",
                (names, [f"{n}_%" for n in names]),  # the tables, their primary keys' indexes
            ).fetchall()

    with job_context(worker_env, dry_run=True) as ctx:
        source = FileSource(ctx, tmp_path, CsvFiles(), columns=["code"], **tables)
        report = source.stage()
        assert [(e.path, e.status) for e in report.entries] == [("a.csv", "staged"), ("b.csv", "staged"), ("c.csv", "failed")]
        assert all(schema.startswith("pg_temp_") for schema, _ in catalog()) and len(catalog()) >= 2
        assert not any(relation_exists(worker_env, t) for t in tables.values())
        # ... yet the dry run's own session reads its staged rows, by the same keyset
        conn = ctx.pg.connection()
        page = source.keyset(["file", "line", "code"]).page(conn, None, 100)
        assert [r[1:] for r in page] == expected and [r[0] for r in page] == list(range(1, 8))
        assert source.count() == 7 and source.last_seq() == 7
    assert catalog() == []  # gone with the session
