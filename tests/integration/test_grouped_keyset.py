"""A grouped keyset (utils.keyset.GroupedKeysetQuery) on the real Postgres: a page never splits a
group, every row comes exactly once and in (group, row) order, the walk ends on a page that says
it is final (not on a short page), resumes from a stored group key, and a group larger than the
batch comes whole. Then a KeysetPhase over it, through the real engine, stopped and resumed."""

from __future__ import annotations

import threading
import uuid
from typing import Sequence

import psycopg
import pytest
from psycopg import sql

from tests.integration.inventory_data import pg_connect, table_parts
from utils.keyset import GroupedKeysetQuery, GroupedPage, KeyKind
from utils.pg import Postgres
from worker.checkpoint import MemoryCheckpointStore, Status
from worker.engine import Engine, EngineOptions
from worker.failures import MemoryFailureStore
from worker.job import BatchResult, Job, KeysetPhase, Page
from worker.retry import RetryPolicy
from worker.stop import StopFlag

KINDS = {"int": KeyKind.INTEGER, "text": KeyKind.TEXT, "uuid": KeyKind.UUID}
SQL_TYPES = {"int": "bigint", "text": "text", "uuid": "uuid"}


def group_key(key_type: str, n: int):
    """Group n's key. Text keys are unpadded ("grp 10" sorts before "grp 2") and uuids random,
    so the order the walk must follow is Postgres's, not n's."""
    if key_type == "int":
        return n * 10
    if key_type == "text":
        return f"grp {n}"
    return uuid.UUID(int=(n * 0x9E3779B97F4A7C15 * 0xD1B54A32D192ED03) % 2**128)


def create(conn: psycopg.Connection, table: sql.Identifier, key_type: str, sizes: Sequence[int], inactive=frozenset()) -> None:
    """Groups of the given sizes; the rows of a group are inserted interleaved with the others,
    so neither a group's ids nor its physical rows are contiguous. `inactive`: (group index,
    row index within the group) of rows with is_active false."""
    conn.execute(sql.SQL(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, grp {type} NOT NULL, payload text NOT NULL,"
        " is_active boolean NOT NULL, processed int NOT NULL DEFAULT 0)"
    ).format(t=table, type=sql.SQL(SQL_TYPES[key_type])))
    conn.execute(sql.SQL("CREATE INDEX ON {} (grp, id)").format(table))
    rows, next_id = [], 1
    for row in range(max(sizes, default=0)):
        for g, size in enumerate(sizes):
            if row < size:
                rows.append((next_id, group_key(key_type, g), f"g{g}r{row}", (g, row) not in inactive))
                next_id += 1
    with conn.cursor() as cur:
        cur.executemany(sql.SQL("INSERT INTO {} (id, grp, payload, is_active) VALUES (%s, %s, %s, %s)").format(table), rows)


def ordered(conn: psycopg.Connection, table: sql.Identifier, where: str = "true") -> list[tuple]:
    """The rows the walk must give, as Postgres orders them."""
    return conn.execute(sql.SQL("SELECT grp, id, payload FROM {} WHERE {} ORDER BY grp, id").format(table, sql.SQL(where))).fetchall()


def walk(query: GroupedKeysetQuery, conn: psycopg.Connection, limit: int, after=None) -> list[GroupedPage]:
    pages = []
    while True:
        page = query.page(conn, after, limit)
        # The page summed up by Postgres says what the page itself says.
        assert query.summary(conn, after, limit) == (len(page.rows), page.last_group, page.final)
        pages.append(page)
        if page.final:
            return pages
        assert page.rows, "an empty page is always final"
        after = page.last_group
        assert len(pages) < 1_000


def expected_pages(rows: list[tuple], limit: int) -> list[list[tuple]]:
    """The model: the first `limit` rows, completed to the end of the last group among them;
    an empty source is one empty page."""
    if not rows:
        return [[]]
    pages, rest = [], rows
    while rest:
        last = rest[min(limit, len(rest)) - 1][0]
        end = next((i for i, r in enumerate(rest) if r[0] != last and i >= limit), len(rest))
        pages.append(rest[:end])
        rest = rest[end:]
    return pages


def group_sizes(rows) -> dict:
    """Rows per group, in the rows' order of groups."""
    sizes: dict = {}
    for row in rows:
        sizes[row[0]] = sizes.get(row[0], 0) + 1
    return sizes


def assert_whole_groups(pages: list[GroupedPage], rows: list[tuple], limit: int) -> None:
    assert [p.rows for p in pages] == expected_pages(rows, limit)
    assert [r for p in pages for r in p.rows] == rows, "every row exactly once, in (group, id) order"
    seen: set = set()
    for page in pages:
        groups = {r[0] for r in page.rows}
        assert not groups & seen, "a group split across two pages"
        seen |= groups
        if page.rows:
            assert page.last_group == page.rows[-1][0] == GroupedKeysetQuery.last_group(page.rows)
    assert [p.final for p in pages] == [False] * (len(pages) - 1) + [True], "only the last page says it is final"


@pytest.fixture
def pg(worker_env):
    with pg_connect(worker_env) as conn:
        yield conn, sql.Identifier(*table_parts(worker_env))


def query_for(table: sql.Identifier, **options) -> GroupedKeysetQuery:
    return GroupedKeysetQuery(table, "grp", ("id", "payload"), row_key="id", **options)


@pytest.mark.parametrize("key_type", ["int", "text", "uuid"])
def test_a_batch_size_that_does_not_divide_the_groups_never_splits_one(pg, key_type):
    conn, table = pg
    create(conn, table, key_type, [6, 7] * 8)  # 104 rows; limit 10 ends inside a group on every page
    rows = ordered(conn, table)
    pages = walk(query_for(table), conn, 10)
    assert_whole_groups(pages, rows, 10)
    assert all(len(p.rows) > 10 for p in pages[:-1]), "each page was completed past the limit"
    assert pages[-1].rows, "the last page with rows says it is final: no empty page is asked for"


@pytest.mark.parametrize("key_type", ["int", "text"])
@pytest.mark.parametrize(
    "sizes, page_sizes",
    [
        ([6, 7, 4, 6], [13, 10]),  # the last page is exactly `limit` rows: final without another fetch
        ([4, 6, 3], [10, 3]),  # a page of exactly `limit` rows that is not the last
        ([4, 6], [10]),  # the whole table is one page of exactly `limit` rows
        ([3], [3]),
    ],
)
def test_the_walk_ends_on_the_page_that_says_so(pg, key_type, sizes, page_sizes):
    conn, table = pg
    create(conn, table, key_type, sizes)
    rows = ordered(conn, table)
    pages = walk(query_for(table), conn, 10)
    assert [len(p.rows) for p in pages] == page_sizes
    assert_whole_groups(pages, rows, 10)
    past_the_end = query_for(table).page(conn, pages[-1].last_group, 10)
    assert past_the_end == GroupedPage([], final=True) and past_the_end.last_group is None


@pytest.mark.parametrize("key_type", ["int", "text"])
def test_an_empty_source_is_one_final_empty_page(pg, key_type):
    conn, table = pg
    create(conn, table, key_type, [])
    assert walk(query_for(table), conn, 10) == [GroupedPage([], final=True)]
    # A filter that nothing matches is an empty source too.
    conn.execute(sql.SQL("DROP TABLE {}").format(table))
    create(conn, table, key_type, [5, 5], inactive={(g, r) for g in range(2) for r in range(5)})
    assert walk(query_for(table, filter=sql.SQL("is_active")), conn, 10) == [GroupedPage([], final=True)]


@pytest.mark.parametrize("key_type", ["int", "text", "uuid"])
def test_a_walk_resumes_from_a_stored_group_key(pg, key_type):
    conn, table = pg
    kind = KINDS[key_type]
    create(conn, table, key_type, [6, 7] * 5)
    rows = ordered(conn, table)
    query = query_for(table)
    first = [query.page(conn, None, 10)]
    first.append(query.page(conn, first[0].last_group, 10))
    stored = kind.encode(first[-1].last_group)  # what the checkpoint holds
    resumed = walk(query, conn, 10, after=kind.decode(stored))
    done = [r for p in first for r in p.rows]
    assert done + [r for p in resumed for r in p.rows] == rows
    assert resumed[0].rows[0][0] != done[-1][0], "the resume starts at the next group"
    assert_whole_groups(first + resumed, rows, 10)


@pytest.mark.parametrize("key_type", ["int", "text"])
def test_a_group_larger_than_the_limit_comes_whole(pg, key_type):
    conn, table = pg
    create(conn, table, key_type, [3, 25, 2, 30, 4])
    rows = ordered(conn, table)
    pages = walk(query_for(table), conn, 10)
    assert_whole_groups(pages, rows, 10)
    sizes = group_sizes(rows)
    for page in pages:
        assert group_sizes(page.rows) == {g: sizes[g] for g in {r[0] for r in page.rows}}
    assert max(len(p.rows) for p in pages) >= 30, "the 30-row group came in one page"
    # Resuming right before a big group: it comes whole, alone, in one page.
    groups = list(sizes)  # in Postgres's order
    for big in (g for g in groups if sizes[g] > 10):
        at = groups.index(big)
        page = query_for(table).page(conn, groups[at - 1] if at else None, 10)
        assert page.rows == [r for r in rows if r[0] == big] and page.final == (at == len(groups) - 1)


@pytest.mark.parametrize("key_type", ["int", "text"])
def test_a_filtered_grouped_walk_groups_only_the_matching_rows(pg, key_type):
    conn, table = pg
    # Group 1 has no active row at all; others lose a few.
    inactive = {(0, 1), (1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (2, 6), (4, 0)}
    create(conn, table, key_type, [6, 7] * 4, inactive=inactive)
    rows = ordered(conn, table, "is_active")
    query = query_for(table, filter=sql.SQL("is_active = %s"), filter_params=(True,))
    pages = walk(query, conn, 10)
    assert_whole_groups(pages, rows, 10)
    assert group_key(key_type, 1) not in {r[0] for p in pages for r in p.rows}
    # span and by_groups give the same rows as the pages.
    assert query.span(conn, None, pages[0].last_group) == pages[0].rows
    assert query.span(conn, pages[0].last_group, pages[1].last_group) == pages[1].rows
    groups = sorted({r[0] for r in pages[1].rows}, key=lambda g: [r[0] for r in rows].index(g))
    assert query.by_groups(conn, groups) == pages[1].rows


@pytest.mark.parametrize("key_type", ["int", "text"])
def test_a_page_read_again_with_its_own_size_is_the_same_page(pg, key_type):
    """The engine redoes a batch interrupted before its checkpoint by fetching its row count."""
    conn, table = pg
    create(conn, table, key_type, [6, 7] * 4)
    query = query_for(table)
    after = None
    for _ in range(3):
        page = query.page(conn, after, 10)
        again = query.page(conn, after, len(page.rows))
        assert again == page
        after = page.last_group


def test_the_page_statement_uses_index_range_conditions(pg):
    conn, table = pg
    create(conn, table, "int", [6, 7] * 300)
    conn.execute(sql.SQL("ANALYZE {}").format(table))
    statement, params = query_for(table).statement(group_key("int", 40), 10)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("EXPLAIN ") + statement, params)
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert "Seq Scan" not in plan, plan
    assert plan.count("Index Cond") >= 3, plan


# --- a KeysetPhase over a grouped source, through the real engine -----------------------------


class Crash(Exception):
    """Stands for the process dying after a batch's writes, before its checkpoint."""


class GroupsPhase(KeysetPhase):
    name = "groups"
    batch_size = 10
    scanned_counter = "rows"

    def __init__(self, job: "GroupsJob"):
        self.job = job

    @property
    def key_kind(self) -> KeyKind:
        return self.job.kind

    def fetch(self, after, limit):
        self.job.fetches.append((after, limit))
        page = self.job.query.page(self.job.pg.connection(), after, limit)
        return Page(len(page.rows), page.last_group, None, rows=lambda: page.rows, final=page.final)

    def fetch_keys(self, keys):
        return self.job.query.by_groups(self.job.pg.connection(), keys)

    def process(self, rows) -> BatchResult:
        rows = [(r[0], r[1]) for r in rows]
        conn = self.job.pg.connection()
        with conn.transaction():
            conn.execute(
                sql.SQL("UPDATE {} SET processed = processed + 1 WHERE id = ANY(%s)").format(self.job.table),
                ([i for _, i in rows],),
            )
        with self.job.lock:
            self.job.batches.append(rows)
            n = len(self.job.batches)
        if self.job.crash_on_group in {g for g, _ in rows}:
            raise Crash()
        if n == self.job.stop_after:
            self.job.stop.request("test")
        return BatchResult({"written": len(rows)})


class GroupsJob(Job):
    name = "groups"
    checkpoint_id = "groups_job"

    def __init__(self, pg: Postgres, table: sql.Identifier, kind: KeyKind, stop: StopFlag,
                 stop_after: int | None = None, crash_on_group=None):
        self.pg, self.table, self.kind, self.stop = pg, table, kind, stop
        self.query = query_for(table)
        self.stop_after, self.crash_on_group = stop_after, crash_on_group
        self.lock = threading.Lock()
        self.batches: list[list[tuple]] = []
        self.fetches: list[tuple] = []

    def phases(self):
        return (GroupsPhase(self),)


def run_engine(pg: Postgres, table, kind, store, **job_args):
    stop = StopFlag()
    job = GroupsJob(pg, table, kind, stop, **job_args)
    policy = RetryPolicy(timeout_seconds=10, max_attempts=3, max_wait_seconds=0, initial_wait_seconds=0)
    engine = Engine(job, store, MemoryFailureStore(), stop, policy, EngineOptions(owner="me"))
    return job, engine.run()


def assert_batches_whole(batches: list[list[tuple]], sizes: dict) -> None:
    for batch in batches:
        assert group_sizes(batch) == {g: sizes[g] for g in {g for g, _ in batch}}, f"a group split: {batch}"


@pytest.fixture
def engine_pg(worker_env):
    pg = Postgres(dict(host=worker_env["DB_HOST"], port=worker_env["DB_PORT"], dbname=worker_env["DB_DATABASE"],
                       user=worker_env["DB_USER"], password=worker_env["DB_PASSWORD"]))
    try:
        yield pg, sql.Identifier(*table_parts(worker_env))
    finally:
        pg.close()


@pytest.mark.parametrize("key_type", ["int", "text"])
def test_the_engine_processes_every_group_whole_once_across_a_stop_and_a_resume(engine_pg, key_type):
    pg, table = engine_pg
    kind = KINDS[key_type]
    conn = pg.connection()
    create(conn, table, key_type, [6, 7] * 10)
    rows = [(g, i) for g, i, _ in ordered(conn, table)]
    sizes = group_sizes(rows)
    store = MemoryCheckpointStore()

    first, cp = run_engine(pg, table, kind, store, stop_after=2)
    assert cp.status is Status.INTERRUPTED
    done = sorted((r for batch in first.batches for r in batch), key=rows.index)
    assert 0 < len(done) < len(rows)
    assert done == rows[: len(done)], "the batches done before the stop are the walk's first rows"
    stopped_at = kind.decode(cp.last_id)
    assert stopped_at == done[-1][0] != rows[len(done)][0], "the checkpoint holds the last complete group"
    assert cp.phase_done == len(done)

    second, cp = run_engine(pg, table, kind, store)
    assert cp.status is Status.COMPLETED
    assert second.fetches[0][0] == stopped_at, "the resume starts after the stored group"

    batches = first.batches + second.batches
    assert sorted((r for b in batches for r in b), key=rows.index) == rows, "every row exactly once"
    assert_batches_whole(batches, sizes)
    assert sum(len({g for g, _ in b}) for b in batches) == len(sizes), "each group in exactly one batch"
    assert cp.counters == {"rows": len(rows), "written": len(rows), "failures": 0}
    assert kind.decode(cp.last_id) == rows[-1][0]
    assert rows[-1][0] not in [after for after, _ in second.fetches], "the final page ended the walk: nothing fetched past it"
    counts = conn.execute(sql.SQL("SELECT processed, count(*) FROM {} GROUP BY processed").format(table)).fetchall()
    assert counts == [(1, len(rows))]


@pytest.mark.parametrize("key_type", ["int", "text"])
def test_a_batch_redone_after_a_crash_is_the_same_whole_groups(engine_pg, key_type):
    pg, table = engine_pg
    kind = KINDS[key_type]
    conn = pg.connection()
    create(conn, table, key_type, [6, 7, 25, 6, 7, 6, 7, 6])
    rows = [(g, i) for g, i, _ in ordered(conn, table)]
    sizes = group_sizes(rows)
    big = group_key(key_type, 2)  # the 25-row group: its batch is written, then the "crash"
    store = MemoryCheckpointStore()

    with pytest.raises(Crash):
        run_engine(pg, table, kind, store, crash_on_group=big)
    crashed = store.load("groups_job")
    intent = next(i for i in crashed.intents if i["from_id"] == crashed.last_id)
    assert kind.decode(intent["to_id"]) == big and intent["rows"] > 10

    second, cp = run_engine(pg, table, kind, store)
    assert cp.status is Status.COMPLETED
    assert second.fetches[0] == (kind.decode(crashed.last_id), intent["rows"]), "the redo asks for the batch's own size"
    redone = next(b for b in second.batches if big in {g for g, _ in b})
    assert len(redone) == intent["rows"] and redone[-1][0] == big, "the same whole groups again"
    assert_batches_whole(second.batches, sizes)
    assert sorted({r for b in second.batches for r in b}, key=rows.index) == rows[rows.index(redone[0]):]
    assert cp.counters["rows"] == len(rows)
