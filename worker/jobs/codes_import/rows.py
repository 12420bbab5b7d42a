"""What a staged code row means, in SQL: its problem if it is invalid, its key, its typed values.

Rows are staged as text (a bad UUID in one row must not fail its whole file), and every rule
about them lives here, written once as SQL over a row alias, so `mark`, `insert`, `verify` and
`report` judge a row alike:

- **Invalid** (`problem`): a CSV row the file source could not read (its `error`), a missing or
  malformed `merchant_id`, an empty `code`, a `points` or `price` that is not a number.
- **Key**: `(merchant_id, code)` as `codes` compares them: the UUID whatever its case and
  hyphens, the code without surrounding spaces.
- **Verdict** (the marks table, one row per staged row, written by `mark`): `problem`,
  `internal_dup` (an earlier valid row, by file and line, has the key) and `existing_dup`
  (`codes` has it). Both flags are NULL for an invalid row, and a row without a mark has not
  been checked yet: never "false" by default.
"""

from __future__ import annotations

from typing import Any, Sequence

from psycopg import sql

from worker.config import TableName
from worker.file_source import CsvFiles, FileSource
from worker.job import JobContext, Row

#: The staged columns, as `codes` names them; `batch_id` is another header for `batch_code`.
COLUMNS = ("merchant_id", "code", "serial", "sku", "points", "sku_name", "batch_code", "price")
ALIASES = {"batch_id": "batch_code"}
#: The verdicts, in the order the counters and the report give them; they add up to the rows.
VERDICTS = {
    "clean": "CLEAN",
    "dup_internal": "INTERNAL_DUPLICATE",
    "dup_existing": "DATABASE_DUPLICATE",
    "dup_both": "BOTH_DUPLICATE",
    "invalid": "INVALID",
}
UNCHECKED = "UNCHECKED"

#: For the job's batch statements: compiling one (tens to hundreds of milliseconds) costs more
#: than it saves on a batch (bench/README.md, codes_import).
NO_JIT = sql.SQL("SET LOCAL jit = off")

# A UUID as Postgres reads it (case and the hyphens between groups of four are free), and a
# plain decimal number (no NaN or Infinity, an exponent of at most three digits).
_UUID = "^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"
_NUMBER = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"


def _column(alias: str | None, name: str) -> sql.Composable:
    """Column `name` of row `alias`; of the indexed table itself when None."""
    return sql.Identifier(name) if alias is None else sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))


def _optional(alias: str, name: str) -> sql.Composable:
    return sql.SQL("nullif(btrim({}), '')").format(_column(alias, name))


def problem(alias: str) -> sql.Composable:
    """Why staged row `alias` cannot be imported (text), or NULL."""
    a = lambda name: _column(alias, name)  # noqa: E731
    numbers = [
        sql.SQL(" WHEN {v} !~ {re} THEN {msg} || quote_literal(left({raw}, 40))").format(
            v=_optional(alias, n), re=sql.Literal(_NUMBER), msg=sql.Literal(f"{n} is not a number: "), raw=a(n)
        )
        for n in ("points", "price")
    ]
    return sql.SQL(
        "CASE WHEN {error} IS NOT NULL THEN {error}"
        " WHEN {merchant} IS NULL THEN 'merchant_id is missing'"
        " WHEN btrim({merchant}) !~* {uuid} THEN 'merchant_id is not a UUID: ' || quote_literal(left({merchant}, 40))"
        " WHEN {code} IS NULL THEN 'code is empty'{numbers} END"
    ).format(
        error=a("error"), merchant=a("merchant_id"), uuid=sql.Literal(_UUID), code=_optional(alias, "code"),
        numbers=sql.SQL("").join(numbers),
    )


def merchant_key(alias: str | None) -> sql.Composable:
    """The merchant as text that is equal exactly when the UUIDs are (for the staging index)."""
    return sql.SQL("lower(replace(btrim({}), '-', ''))").format(_column(alias, "merchant_id"))


def code_key(alias: str | None) -> sql.Composable:
    return sql.SQL("btrim({})").format(_column(alias, "code"))


def staged_code(alias: str | None) -> sql.Composable:
    """The code as the staging index holds it: compared byte by byte, which is cheaper than a
    locale's collation and, for equality, the same."""
    return sql.SQL('{} COLLATE "C"').format(code_key(alias))


def typed(alias: str) -> dict[str, sql.Composable]:
    """Each column of a valid row `alias` as `codes` stores it."""
    values: dict[str, sql.Composable] = {n: _column(alias, n) for n in COLUMNS}
    values["merchant_id"] = sql.SQL("btrim({})::uuid").format(_column(alias, "merchant_id"))
    values["code"] = code_key(alias)
    for n in ("points", "price"):
        values[n] = sql.SQL("{}::numeric").format(_optional(alias, n))
    return values


def clean(marks_alias: str | None) -> sql.Composable:
    """Whether mark `marks_alias` (the marks table itself when None) is of a clean row."""
    return sql.SQL("{} IS NULL AND NOT {} AND NOT {}").format(*(_column(marks_alias, n) for n in ("problem", "internal_dup", "existing_dup")))


def _verdict_conditions(marks_alias: str) -> dict[str, sql.Composable]:
    """VERDICTS' conditions on a mark; they exclude each other (an invalid row's flags are NULL)."""
    problem_, internal, existing = (_column(marks_alias, n) for n in ("problem", "internal_dup", "existing_dup"))
    return {
        "clean": clean(marks_alias),
        "dup_internal": sql.SQL("{} AND NOT {}").format(internal, existing),
        "dup_existing": sql.SQL("{} AND NOT {}").format(existing, internal),
        "dup_both": sql.SQL("{} AND {}").format(internal, existing),
        "invalid": sql.SQL("{} IS NOT NULL").format(problem_),
    }


def verdict(marks_alias: str) -> sql.Composable:
    """The report's status of a staged row joined (LEFT) to its mark: UNCHECKED without one."""
    whens = [sql.SQL(" WHEN {} THEN {}").format(c, sql.Literal(VERDICTS[v])) for v, c in _verdict_conditions(marks_alias).items()]
    return sql.SQL("CASE WHEN {} IS NULL THEN {}{} END").format(_column(marks_alias, "seq"), sql.Literal(UNCHECKED), sql.SQL("").join(whens))


def verdict_counts(marks_alias: str) -> sql.Composable:
    """The counters of VERDICTS, in order, as aggregates over marks `marks_alias`."""
    return sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(c) for c in _verdict_conditions(marks_alias).values())


def seq_condition(rows: Sequence[Row], alias: str) -> tuple[sql.Composable, tuple[Any, ...]]:
    """A batch as a condition on `alias.seq`: the page's range when it is a whole page (`fetch`
    gives its summary `("range", after, last)`), else its rows' seqs (a part of a batch the
    engine split, or failed rows fetched again)."""
    seq = _column(alias, "seq")
    summary = getattr(rows, "summary", None)
    if summary is not None and summary[0] == "range":
        _, after, last = summary
        if after is None:
            return sql.SQL("{} <= %s").format(seq), (last,)
        return sql.SQL("{seq} > %s AND {seq} <= %s").format(seq=seq), (after, last)
    return sql.SQL("{} = ANY(%s)").format(seq), ([r[0] for r in rows],)


class Tables:
    """The run's own tables: the staged rows and their ledger (the file source), and the marks."""

    def __init__(self, ctx: JobContext, tag: str):
        settings = ctx.job_settings
        prefix: TableName = settings.staging
        assert settings.source is not None  # required
        self.ctx = ctx
        self.source = FileSource(
            ctx, settings.source, CsvFiles(),
            staging=TableName(prefix.schema, f"{prefix.name}_rows_{tag}"),
            ledger=TableName(prefix.schema, f"{prefix.name}_files_{tag}"),
            columns=COLUMNS, aliases=ALIASES,
        )
        self.rows = self.source.staging
        self.marks = ctx.sink.scratch(TableName(prefix.schema, f"{prefix.name}_marks_{tag}"))
        self._key_index = sql.Identifier(f"{prefix.name}_rows_{tag}_code"[:63])

    def create(self) -> None:
        """The marks table, and the staged rows' index by code (then seq) that finds an earlier
        row with the same key (the same code for another merchant is rare, and filtered);
        analysed, since the table was just filled."""
        with self.ctx.sink.scratch_transaction() as cur:
            cur.execute("SET LOCAL maintenance_work_mem = '256MB'")  # the index sorted in memory
            cur.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (seq bigint PRIMARY KEY, problem text, internal_dup boolean, existing_dup boolean)"
            ).format(self.marks))
            cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (({}), seq)").format(self._key_index, self.rows, staged_code(None)))
            cur.execute(sql.SQL("ANALYZE {}").format(self.rows))

    def exist(self) -> bool:
        """Whether the staged rows and marks are there (they are dropped when an import completes)."""
        with self.ctx.sink.scratch_transaction() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL", (self.rows.as_string(cur), self.marks.as_string(cur)))
            return bool(cur.fetchone()[0])

    def drop(self) -> None:
        self.source.drop()
        with self.ctx.sink.scratch_transaction() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.marks))
