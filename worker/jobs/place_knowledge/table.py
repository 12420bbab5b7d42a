"""The facts table as Postgres describes it, and the SQL that judges staged facts against it.

A fact's identity is its content hash, defined once, in SQL (`content_hash`): sha256 of
`poi_id|area_id|topic|fact_text`, the text trimmed and every run of whitespace (JavaScript's
`\\s`, as the seed's script normalised it: NBSP, tabs and the Unicode spaces included) made one
space, case kept. Python never computes it, so the staged facts and the table's rows can never
be hashed two ways.

A staged fact is checked against the table's own rules, read from the catalog: its CHECK
constraints (topic, confidence, source URL, one parent, non-empty text), its NOT NULL
columns, its column defaults, and its foreign keys (a POI or an area that does not exist). A
fact that breaks one is a recorded failure and never fails its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from worker.config import TableName
from worker.exceptions import SchemaMismatch
from worker.job import JobContext
from worker.tables import missing_tables, table_hint

#: The columns a source may give, and the staged type of each (text unless said: a value the
#: table refuses is the row's failure, found by the checks below, not the file's).
IMPORTED = (
    "poi_id", "area_id", "topic", "fact_text", "fact_text_en", "structured_data", "confidence",
    "source_url", "source_name", "sort_order", "display_ready",
)
STAGED_TYPES = {**dict.fromkeys(IMPORTED, "text"), "structured_data": "jsonb"}
HASH_COLUMN = "content_hash"
_WHITESPACE = r"[\s\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+"
_TRUE, _FALSE = ("true", "t", "yes", "y", "on", "1"), ("false", "f", "no", "n", "off", "0")


def normalised(text: sql.Composable) -> sql.Composable:
    """`text` trimmed, each run of whitespace one space."""
    return sql.SQL("btrim(regexp_replace({}, {}, ' ', 'g'))").format(text, sql.Literal(_WHITESPACE))


def content_hash(poi: sql.Composable, area: sql.Composable, topic: sql.Composable, text: sql.Composable) -> sql.Composable:
    """The fact's identity: hex sha256 of `poi_id|area_id|topic|normalised fact_text` (a NULL
    part is empty)."""
    return sql.SQL(
        "encode(sha256(convert_to(concat(coalesce({}, ''), '|', coalesce({}, ''), '|', coalesce({}, ''), '|', {}), 'UTF8')), 'hex')"
    ).format(poi, area, topic, normalised(sql.SQL("coalesce({}, '')").format(text)))


def hash_of(alias: str) -> sql.Composable:
    """`content_hash` over the columns of the row named `alias`."""
    a = sql.Identifier(alias)
    return content_hash(*(sql.SQL("{}.{}").format(a, sql.Identifier(c)) for c in ("poi_id", "area_id", "topic", "fact_text")))


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool
    default: str | None


class FactsTable:
    """The table of `PLACE_KNOWLEDGE_TABLE`, described from the catalog by `describe()`."""

    def __init__(self, ctx: JobContext, table: TableName):
        self.ctx, self.name = ctx, table
        self.ident = sql.Identifier(table.schema, table.name)
        self.columns: dict[str, Column] = {}
        self.checks: list[tuple[str, str]] = []
        self.references: dict[str, tuple[str, str]] = {}

    def describe(self) -> "FactsTable":
        """Read the table's columns, CHECKs and single-column foreign keys; SchemaMismatch when
        it is missing or lacks a column the source may give."""
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{self.name.schema}.{self.name.name}",))
            if cur.fetchone()[0] is None:
                raise SchemaMismatch(missing_tables([str(self.name)], "place_knowledge", "its facts table", "PLACE_KNOWLEDGE_TABLE"))
            oid = sql.SQL("{}::regclass").format(sql.Literal(self.ident.as_string(cur)))
            cur.execute(sql.SQL(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)"
                " FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
                " WHERE a.attrelid = {} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
            ).format(oid))
            self.columns = {r[0]: Column(*r) for r in cur.fetchall()}
            cur.execute(sql.SQL(
                "SELECT conname, pg_get_expr(conbin, conrelid) FROM pg_constraint WHERE conrelid = {} AND contype = 'c' ORDER BY conname"
            ).format(oid))
            self.checks = cur.fetchall()
            cur.execute(sql.SQL(
                "SELECT a.attname, c.confrelid::regclass::text, af.attname FROM pg_constraint c"
                " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
                " JOIN pg_attribute af ON af.attrelid = c.confrelid AND af.attnum = c.confkey[1]"
                " WHERE c.conrelid = {} AND c.contype = 'f' AND cardinality(c.conkey) = 1"
            ).format(oid))
            self.references = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
        missing = [c for c in IMPORTED if c not in self.columns]
        if missing:
            raise SchemaMismatch(f"{self.name} has no column {', '.join(missing)} ({table_hint('place_knowledge', 'PLACE_KNOWLEDGE_TABLE')})")
        unsupported = [c for c in IMPORTED if self._kind(c) is None]
        if unsupported:
            raise SchemaMismatch(f"{self.name}: cannot import columns of type {', '.join(f'{c} {self.columns[c].type}' for c in unsupported)}")
        return self

    @property
    def has_hash(self) -> bool:
        return HASH_COLUMN in self.columns

    def existing_hash(self, alias: str) -> sql.Composable:
        """The hash of an existing row: its `content_hash`, or computed from its content when
        it has none (a row the application wrote, or a dry run before the column exists)."""
        if not self.has_hash:
            return hash_of(alias)
        return sql.SQL("coalesce({}.{}, {})").format(sql.Identifier(alias), sql.Identifier(HASH_COLUMN), hash_of(alias))

    # -- staged facts judged against the table ------------------------------------------

    def candidates(self, staging: sql.Composable, condition: sql.Composable) -> sql.Composable:
        """The staged rows meeting `condition` (over alias `s`) as the table would take them:
        `seq, file, line`, every imported column typed and defaulted as the table does, their
        `content_hash`, and `problem`: NULL, or why the table would refuse the row."""
        derived = [sql.SQL("{} AS {}").format(self._value(c), sql.Identifier(c)) for c in IMPORTED]
        given = [sql.SQL("s.{} AS {}").format(sql.Identifier(c), sql.Identifier(f"_{c}_given")) for c in IMPORTED if self._kind(c) in ("integer", "boolean")]
        return sql.SQL(
            "SELECT f.seq, f.file, f.line, {cols}, {hash} AS content_hash, {problem} AS problem"
            " FROM (SELECT s.seq, s.file, s.line, s.error, {derived} FROM {staging} s WHERE {condition}) AS f"
        ).format(
            cols=sql.SQL(", ").join(sql.SQL("f.{}").format(sql.Identifier(c)) for c in IMPORTED),
            hash=hash_of("f"),
            problem=self._problem(),
            derived=sql.SQL(", ").join(derived + given),
            staging=staging,
            condition=condition,
        )

    def _kind(self, column: str) -> str | None:
        t = self.columns[column].type
        if t in ("text", "jsonb") or t.startswith(("character varying", "character(")):
            return "text"
        if t in ("integer", "smallint", "bigint"):
            return "integer"
        if t == "boolean":
            return "boolean"
        return None

    def _value(self, column: str) -> sql.Composable:
        """The staged value as the column's type, or its default when not given; NULL for a
        value the type cannot take (the problem says so)."""
        c = sql.SQL("s.{}").format(sql.Identifier(column))
        default = sql.SQL(self.columns[column].default) if self.columns[column].default else sql.SQL("NULL")
        kind = self._kind(column)
        if kind == "integer":
            return sql.SQL("CASE WHEN {c} IS NULL THEN {d} WHEN btrim({c}) ~ '^[+-]?[0-9]{{1,9}}$' THEN btrim({c})::integer END").format(c=c, d=default)
        if kind == "boolean":
            return sql.SQL("CASE WHEN {c} IS NULL THEN {d} WHEN lower(btrim({c})) IN ({t}) THEN true WHEN lower(btrim({c})) IN ({f}) THEN false END").format(
                c=c, d=default, t=sql.SQL(", ").join(map(sql.Literal, _TRUE)), f=sql.SQL(", ").join(map(sql.Literal, _FALSE))
            )
        return sql.SQL("coalesce({}, {})").format(c, default) if self.columns[column].default else c

    def _problem(self) -> sql.Composable:
        """CASE ... END: the first rule of the table the row `f` breaks, as a sentence."""
        f = lambda column: sql.SQL("f.{}").format(sql.Identifier(column))  # noqa: E731
        cases: list[sql.Composable] = [sql.SQL("WHEN f.error IS NOT NULL THEN f.error")]
        for c in IMPORTED:
            kind = self._kind(c)
            if kind in ("integer", "boolean"):
                cases.append(sql.SQL("WHEN {v} IS NULL AND {g} IS NOT NULL THEN {m} || quote_literal({g})").format(
                    v=f(c), g=f(f"_{c}_given"), m=sql.Literal(f"{c} must be {'an integer' if kind == 'integer' else 'true or false'}, not ")
                ))
        for c in IMPORTED:
            if self.columns[c].not_null:
                cases.append(sql.SQL("WHEN {} IS NULL THEN {}").format(f(c), sql.Literal(f"{c} is missing")))
        cases.append(sql.SQL("WHEN {} = '' THEN 'fact_text is empty'").format(normalised(f("fact_text"))))
        for name, expression in self.checks:
            # The table's own CHECK, over the row's columns (the only ones in scope).
            cases.append(sql.SQL("WHEN ({}) IS FALSE THEN {}").format(sql.SQL(expression), sql.Literal(f'violates check constraint "{name}"')))
        for column, (table, key) in sorted(self.references.items()):
            if column in IMPORTED:
                cases.append(sql.SQL("WHEN {v} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {t} r WHERE r.{k} = {v}) THEN {m} || quote_literal({v})").format(
                    v=f(column), t=sql.SQL(table), k=sql.Identifier(key), m=sql.Literal(f"no such {column} in {table}: ")
                ))
        return sql.SQL("CASE {} END").format(sql.SQL(" ").join(cases))
