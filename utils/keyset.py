"""Keyset pagination over a Postgres table: `WHERE key > last ORDER BY key LIMIT n`, never OFFSET.

OFFSET rescans every skipped row and shifts when rows are inserted or deleted; a keyset page is
one index range scan and resumes exactly from the last key seen. Keys may be integers, UUIDs or
text; `KeyKind` converts them to and from what a MongoDB checkpoint can store. `KeysetQuery`
walks a table, optionally filtered (`WHERE embedding IS NULL`); `GroupedKeysetQuery` walks it in
pages of whole groups (all the rows of one `poi_id`), resuming after the last complete group.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import psycopg
from psycopg import sql

Key = int | str | uuid.UUID

# A document's id names a row only in the key's own text form (`key::text`, as the jobs write
# ids): "007" or an upper-case UUID is some other document. Python and SQL spellings of one rule.
_INT_TEXT = r"0|-?[1-9][0-9]{0,18}"
_UUID_TEXT = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_INT64 = (-(2**63), 2**63 - 1)


class KeyKind(enum.Enum):
    INTEGER = "integer"
    UUID = "uuid"
    TEXT = "text"

    @classmethod
    def from_pg_type(cls, data_type: str) -> "KeyKind":
        if data_type in ("smallint", "integer", "bigint"):
            return cls.INTEGER
        if data_type == "uuid":
            return cls.UUID
        if data_type in ("text", "character varying", "character"):
            return cls.TEXT
        raise ValueError(f"unsupported key type {data_type!r} (use an integer, uuid or text key)")

    @property
    def sql_type(self) -> str:
        """The Postgres type that holds any key of this kind."""
        return {KeyKind.INTEGER: "bigint", KeyKind.UUID: "uuid", KeyKind.TEXT: "text"}[self]

    def encode(self, key: Key | None) -> int | str | None:
        """A value a checkpoint document can hold (BSON has no UUID-as-key we want to rely on)."""
        if key is None or self is KeyKind.INTEGER:
            return key  # type: ignore[return-value]
        return str(key)

    def decode(self, stored: Any) -> Key | None:
        if stored is None:
            return None
        if self is KeyKind.INTEGER:
            return int(stored)
        if self is KeyKind.UUID:
            return uuid.UUID(str(stored))
        return str(stored)

    def parse_document_id(self, doc_id: str) -> Key | None:
        """The table key a search-document id would have, or None if no row could have it."""
        if self is KeyKind.TEXT:
            return doc_id
        if self is KeyKind.INTEGER:
            if not re.fullmatch(_INT_TEXT, doc_id):
                return None
            value = int(doc_id)
            return value if _INT64[0] <= value <= _INT64[1] else None
        return uuid.UUID(doc_id) if re.fullmatch(_UUID_TEXT, doc_id) else None

    def document_key_sql(self, doc_id: sql.Composable) -> sql.Composable:
        """`parse_document_id` computed by Postgres over a text expression: the key, or NULL.
        Nested CASEs because Postgres does not promise to evaluate AND's operands in order."""
        if self is KeyKind.TEXT:
            return doc_id
        if self is KeyKind.INTEGER:
            # No regular expression: it was two thirds of this expression's cost (0.36 of 0.47 s
            # per million ids). At most 19 ASCII digits after an optional '-' (so the casts cannot
            # fail), within int64, and written as the bigint writes itself (no '007', no '-0').
            digits = sql.SQL("CASE WHEN left({d}, 1) = '-' THEN substr({d}, 2) ELSE {d} END").format(d=doc_id)
            return sql.SQL(
                "CASE WHEN {digits} <> '' AND length({digits}) <= 19 AND ltrim({digits}, '0123456789') = ''"
                " THEN CASE WHEN {d}::numeric BETWEEN {low} AND {high}"
                " THEN CASE WHEN {d}::bigint::text = {d} THEN {d}::bigint END END END"
            ).format(digits=digits, d=doc_id, low=sql.Literal(_INT64[0]), high=sql.Literal(_INT64[1]))
        return sql.SQL("CASE WHEN {d} ~ {pattern} THEN {d}::uuid END").format(d=doc_id, pattern=sql.Literal(f"^{_UUID_TEXT}$"))

    def greatest_sql(self, key: sql.Composable) -> sql.Composable:
        """The aggregate that gives the last key in `ORDER BY key` order. Postgres has no
        max(uuid); a uuid's canonical text (lower-case hex) compared bytewise (COLLATE "C")
        sorts as the uuid's own bytes do."""
        if self is KeyKind.UUID:
            return sql.SQL('max({}::text COLLATE "C")::uuid').format(key)
        return sql.SQL("max({})").format(key)


@dataclass(frozen=True)
class KeysetQuery:
    """Pages of `columns` (names, or SQL expressions) from `table`, ordered by `key`.

    `filter`, optional: a condition (say `sql.SQL("embedding IS NULL")`, or `is_active = %s`
    with `filter_params=(True,)`) that every statement applies, so a page is
    `WHERE (<filter>) AND key > %s ORDER BY key LIMIT %s`; its placeholders are positional
    (`%s`) and come before the key's. Rows outside the filter are skipped, never counted.
    A walk over a filter resumes exactly even when processing makes rows stop matching (the
    phase fills `embedding`): the cursor only moves forward, past keys already walked, so a row
    that left the filter is not looked for again, and the next page starts after the last key
    seen whatever became of the rows before it. A row that starts to match behind the cursor
    waits for the next walk. Give the filter an index that serves it with the key order (a
    partial index `ON t (key) WHERE <filter>`, or one on (filter column, key)).
    """

    table: sql.Identifier
    key: str
    columns: Sequence[str | sql.Composable]
    filter: sql.Composable | None = None
    filter_params: Sequence[Any] = ()

    def page(self, conn: psycopg.Connection, after: Key | None, limit: int) -> list[tuple]:
        with conn.cursor() as cur:
            cur.execute(self.statement(after is not None), self.params(after, limit))
            return cur.fetchall()

    def summary(self, conn: psycopg.Connection, after: Key | None, limit: int) -> tuple[int, Key | None]:
        """What `page` would return, summed up by Postgres: its row count and its last key,
        without a Python object per row (for a phase that writes with SQL over the range;
        `span` reads the rows if they are wanted)."""
        inner = sql.SQL("SELECT {key} FROM {table} {where}ORDER BY {key} LIMIT %s").format(
            key=sql.Identifier(self.key), table=self.table, where=self._where(after is not None)
        )
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*), max({key}) FROM ({inner}) p").format(key=sql.Identifier(self.key), inner=inner), self.params(after, limit))
            size, last = cur.fetchone()
        return size, last

    def by_keys(self, conn: psycopg.Connection, keys: Sequence[Key]) -> list[tuple]:
        """The same columns for exactly these keys (to re-process rows that failed); with a
        filter, only those of them that still match it."""
        statement = sql.SQL("SELECT {cols} FROM {table} WHERE {filter}{key} = ANY(%s) ORDER BY {key}").format(
            cols=self._columns(), table=self.table, filter=self._filter_and(), key=sql.Identifier(self.key)
        )
        with conn.cursor() as cur:
            cur.execute(statement, (*self.filter_params, list(keys)))
            return cur.fetchall()

    def span(self, conn: psycopg.Connection, after: Key | None, last: Key) -> list[tuple]:
        """Every row with `after` < key <= `last` (and matching the filter): a page read again,
        with any row added since."""
        lower = sql.SQL("{} > %s AND ").format(sql.Identifier(self.key)) if after is not None else sql.SQL("")
        statement = sql.SQL("SELECT {cols} FROM {table} WHERE {filter}{lower}{key} <= %s ORDER BY {key}").format(
            cols=self._columns(), table=self.table, filter=self._filter_and(), lower=lower, key=sql.Identifier(self.key)
        )
        with conn.cursor() as cur:
            cur.execute(statement, (*self.filter_params, *((last,) if after is None else (after, last))))
            return cur.fetchall()

    def statement(self, has_lower_bound: bool) -> sql.Composed:
        return sql.SQL("SELECT {cols} FROM {table} {where}ORDER BY {key} LIMIT %s").format(
            cols=self._columns(),
            table=self.table,
            where=self._where(has_lower_bound),
            key=sql.Identifier(self.key),
        )

    def _where(self, has_lower_bound: bool) -> sql.Composable:
        if has_lower_bound:
            return sql.SQL("WHERE {}{} > %s ").format(self._filter_and(), sql.Identifier(self.key))
        if self.filter is not None:
            return sql.SQL("WHERE ({}) ").format(self.filter)
        return sql.SQL("")

    def params(self, after: Key | None, limit: int) -> tuple:
        """The parameters of `statement(after is not None)`, for statements built around it."""
        return (*self.filter_params, *((limit,) if after is None else (after, limit)))

    def _filter_and(self) -> sql.Composable:
        return sql.SQL("({}) AND ").format(self.filter) if self.filter is not None else sql.SQL("")

    def _columns(self) -> sql.Composed:
        return sql.SQL(", ").join(
            sql.Identifier(c) if isinstance(c, str) else c for c in (self.key, *self.columns)
        )


@dataclass(frozen=True)
class GroupedPage:
    """One page of a GroupedKeysetQuery: whole groups only.

    `final`: no matching row has a group key past this page's last group (an empty page is
    final), so the walk ends here; the page's size cannot tell, since a page completed to the
    end of its last group may hold more than `limit` rows. `last_group`: the key to store in
    the checkpoint and to pass as the next page's `after_group` (None for an empty page).
    """

    rows: list[tuple]
    final: bool

    @property
    def last_group(self) -> Key | None:
        return GroupedKeysetQuery.last_group(self.rows) if self.rows else None


@dataclass(frozen=True)
class GroupedKeysetQuery:
    """Pages of whole groups: a batch never splits the rows sharing a `group_key` value (the
    rows of one `collector_result_id`, of one `poi_id`).

    Rows are `(group_key, *columns)` in (group_key, row_key) order (`row_key`, optional, orders
    the rows within a group, say the primary key; without it their order there is unspecified).
    `page(conn, after_group, limit)` takes the first `limit` matching rows with a group key past
    `after_group` and completes the page to the end of the last group among them: every row
    of that group comes too, so a page holds at least `limit` rows unless it is the walk's
    last, and a group larger than `limit` comes whole, alone or with the groups before it,
    in one page of more than `limit` rows. The cursor is a group key: the last group of a
    page, which is complete, so a resume starts at the next group and never re-reads or skips
    part of one. The end of the walk is `GroupedPage.final`, not a short page.

    A KeysetPhase over it returns, from `fetch`, a `worker.job.Page` that carries `final`
    (its default `row[0]` key is the group key, so `key_of`/`last_key` need nothing)::

        p = self.query.page(conn, after, limit)
        return Page(len(p.rows), p.last_group, None, rows=lambda: p.rows, final=p.final)

    A batch the engine re-reads after a crash asks for its old row count, which gives the same
    whole groups again while they are unchanged. The engine still hands `process` part of a
    batch when it halves one that a row error refused (`KeysetPhase.row_errors`); a phase that
    must write whole groups there too sets `row_errors = ()`. `filter`/`filter_params` are as in
    KeysetQuery, and a walk over a filter resumes exactly for the same reason. For an index
    range scan per page, index `group_key` (with `row_key`: `(group_key, row_key)`).
    """

    table: sql.Identifier
    group_key: str
    columns: Sequence[str | sql.Composable]
    filter: sql.Composable | None = None
    filter_params: Sequence[Any] = ()
    row_key: str | None = None

    def page(self, conn: psycopg.Connection, after_group: Key | None, limit: int) -> GroupedPage:
        """The whole groups after `after_group` that the first `limit` rows reach into."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        statement, params = self.statement(after_group, limit)
        with conn.cursor() as cur:
            cur.execute(statement, params)
            found = cur.fetchall()
        if not found:
            return GroupedPage([], final=True)
        return GroupedPage([row[:-1] for row in found], final=found[0][-1])

    def summary(self, conn: psycopg.Connection, after_group: Key | None, limit: int) -> tuple[int, Key | None, bool]:
        """What `page` would return, summed up by Postgres: its row count, its last group and
        whether it is final, without a Python object per row (a phase that writes with SQL over
        the page's range needs no more; `span` reads the rows if they are wanted)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        statement, params = self.statement(after_group, limit, summary=True)
        with conn.cursor() as cur:
            cur.execute(statement, params)
            size, last_group, final = cur.fetchone()
        return size, last_group if size else None, final

    def statement(self, after_group: Key | None, limit: int, summary: bool = False) -> tuple[sql.Composed, tuple]:
        """The page's one statement and its parameters. The first `limit` rows past
        `after_group` give the last group (the edge); the page is every row with
        `after_group` < group <= edge, plus a column saying whether no row lies past edge.
        The edge and that test are computed once each (InitPlans), so both range predicates are index
        conditions; the test is `ORDER BY group LIMIT 1`, not EXISTS, which the planner may
        answer with a sequential scan that reads every row already walked."""
        g = sql.Identifier(self.group_key)
        edge = sql.SQL("(SELECT _edge FROM _grouped_keyset_edge)")
        if after_group is None:
            head, head_params = self._where(None, ())
            span, span_params = self._where(sql.SQL("{} <= {}").format(g, edge), ())
        else:
            head, head_params = self._where(sql.SQL("{} > %s").format(g), (after_group,))
            span, span_params = self._where(sql.SQL("{g} > %s AND {g} <= {edge}").format(g=g, edge=edge), (after_group,))
        past, past_params = self._where(sql.SQL("{} > {}").format(g, edge), ())
        # The page's rows and whether it is final; or summed up: its size, its edge, and that.
        select = (
            sql.SQL("count(*), {}, ").format(edge) if summary else sql.SQL("{}, ").format(self._columns())
        ) + sql.SQL("(SELECT {g} FROM {table} {past} ORDER BY {g} LIMIT 1) IS NULL FROM {table} {span}").format(
            g=g, table=self.table, past=past, span=span
        )
        statement = sql.SQL(
            "WITH _grouped_keyset_edge AS (SELECT {g} AS _edge FROM"
            " (SELECT {g} FROM {table} {head} ORDER BY {g} LIMIT %s) head ORDER BY {g} DESC LIMIT 1)"
            " SELECT {select}{order}"
        ).format(
            g=g, table=self.table, head=head, select=select,
            order=sql.SQL("") if summary else sql.SQL(" ORDER BY {}").format(self._order()),
        )
        return statement, (*head_params, limit, *past_params, *span_params)

    @staticmethod
    def last_group(rows: Sequence[tuple]) -> Key:
        """The group key to resume after: the last row's, whose group a page holds whole."""
        return rows[-1][0]

    def span(self, conn: psycopg.Connection, after_group: Key | None, last_group: Key) -> list[tuple]:
        """Every row of the groups after `after_group` up to `last_group`: a page read again
        (for a `Page` whose rows are read only when the engine needs them)."""
        g = sql.Identifier(self.group_key)
        lower = (sql.SQL("{} > %s AND ").format(g), (after_group,)) if after_group is not None else (sql.SQL(""), ())
        where, params = self._where(sql.SQL("{}{} <= %s").format(lower[0], g), (*lower[1], last_group))
        return self._select(conn, where, params)

    def by_groups(self, conn: psycopg.Connection, groups: Sequence[Key]) -> list[tuple]:
        """Every row of exactly these groups (to re-process groups that failed)."""
        where, params = self._where(sql.SQL("{} = ANY(%s)").format(sql.Identifier(self.group_key)), (list(groups),))
        return self._select(conn, where, params)

    def _select(self, conn: psycopg.Connection, where: sql.Composable, params: tuple) -> list[tuple]:
        statement = sql.SQL("SELECT {cols} FROM {table} {where} ORDER BY {order}").format(
            cols=self._columns(), table=self.table, where=where, order=self._order()
        )
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()

    def _where(self, condition: sql.Composable | None, params: tuple) -> tuple[sql.Composable, tuple]:
        """`WHERE (<filter>) AND <condition>`, and its parameters in that order."""
        parts = ([sql.SQL("({})").format(self.filter)] if self.filter is not None else []) + (
            [condition] if condition is not None else []
        )
        if not parts:
            return sql.SQL(""), ()
        return sql.SQL("WHERE ") + sql.SQL(" AND ").join(parts), (*self.filter_params, *params)

    def _order(self) -> sql.Composed:
        return sql.SQL(", ").join(sql.Identifier(k) for k in (self.group_key, self.row_key) if k is not None)

    def _columns(self) -> sql.Composed:
        return sql.SQL(", ").join(
            sql.Identifier(c) if isinstance(c, str) else c for c in (self.group_key, *self.columns)
        )
