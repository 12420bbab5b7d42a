"""A file source: rows read from files, staged into Postgres with COPY, then walked by keyset.

A job that imports files (a JSON Lines file, a directory of research JSON files, a directory of
CSV files) does not walk the files themselves: a file cannot be resumed at a row, and Python
would have to hold what SQL can compare. Instead `FileSource.stage` copies every file into a
staging table, one transaction per file, and the job's phases walk that table by `seq`:

- **Rows.** The staging table holds `seq bigint` (its primary key), `file text` (the file's path
  relative to the source), `line int` (1-based: the file's line for JSON Lines and CSV, the
  fact's position in its `facts` array for research JSON), the caller's columns (text, or the
  type the caller gives) and `error text`. A bad row (a line that is not a JSON object, a CSV
  row with the wrong number of fields, a value Postgres cannot store) is staged too, with its
  columns NULL and `error` set, so the walk meets it in order and the job records it as a
  failure exactly once. Blank lines are only counted.
- **Exactly once.** Each file is read and copied in one transaction that also writes its row in
  the **ledger** (path, size, sha256, status, rows, blank_rows, bad_rows, first_seq, last_seq,
  duplicate_of, error, staged_at). A stop request (checked between chunks of rows), a crash or
  a lost connection part way through leaves nothing of that file; the next `stage` reads it
  again whole. A file the ledger has is never read again.
- **Order.** Files are staged in sorted path order, and `seq` counts on from the ledger's last,
  so it increases in (file, line) order; for a given set of files it does not depend on how
  often staging was interrupted, so a dry run's staging has the same `seq`s as the real run's.
  A keyset over `seq` resumes exactly (`keyset`, `last_seq`). (A failed file staged once fixed
  takes the `seq`s after everything staged before it.)
- **Changed files.** A path the ledger has with another sha256 is an error naming the file
  (`SourceChanged`), found before anything is staged: a staged file is never restaged silently.
  The exception is a file whose staging `failed` (nothing of it is staged): a fixed version is
  read again.
- **Copies and renames.** A file whose content (sha256) is already `staged` under another path
  is not staged again: it is recorded as `duplicate`, naming the path it duplicates. So a file
  renamed between an interrupted run and its resume adds no row twice, and an exact copy of a
  file adds nothing. Only `staged` files count: two header-only files are both `empty`.
- **Failures.** A file that cannot be read as a whole (an unknown CSV header, a research file
  that is not a JSON object with a `facts` array, a CSV that is not UTF-8, a value a typed column
  refuses) is recorded `failed` with the reason, in its own transaction, and the other files go
  on. A file without any row is recorded `empty`.
- **Dry run.** Both tables are named through `sink.scratch`, and every statement runs in
  `sink.scratch_transaction()`, so a dry run stages into `pg_temp` and writes no real table.
- **Identity.** `FileSource.identity()` is the sorted (relative path, sha256) of the source's
  files, and `fingerprint()` one digest of it: the same files give the same value wherever they
  lie, another file set (or a changed file) another.

The ledger and staging table belong to one source: use other table names for another file set.
A path the ledger has that the directory no longer holds keeps its rows; the report lists it as
`missing`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping, Protocol, Sequence

import psycopg
from psycopg import sql

from utils.keyset import KeysetQuery
from worker.config import TableName
from worker.exceptions import SourceChanged, SourceError, SourceMissing
from worker.job import BatchResult, Failure, JobContext

#: Columns every staging table has; a caller's column may not use these names.
RESERVED_COLUMNS = ("seq", "file", "line", "error")
STATUSES = ("staged", "empty", "failed", "duplicate")

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TYPE = re.compile(r"^[a-z][a-z0-9_ ]*(\(\d+(, ?\d+)?\))?(\[\])?$")
_JSON_TYPES = ("json", "jsonb")
# A JSON text holding the escape \u0000 (preceded by an even number of backslashes): jsonb
# refuses it, as text refuses a NUL character.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_BOM = b"\xef\xbb\xbf"
_JSON_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


#: A row as a reader gives it: the text of each column, in the columns' order (None: NULL).
Values = tuple[str | None, ...]


class FileRejected(Exception):
    """A reader cannot read this file as a whole; nothing of it is staged, the other files go on."""


@dataclass(frozen=True)
class BadRow:
    """A row a reader could not take; staged with `error` set."""

    line: int
    error: str


@dataclass
class Tally:
    """What reading one file found besides its rows."""

    blank: int = 0


class Columns:
    """The caller's columns, in order, with their Postgres types (text unless given), and the
    other names a header or key may give them (`aliases`: alias -> column). Names are matched
    case-insensitively, after stripping spaces."""

    def __init__(self, columns: Sequence[str] | Mapping[str, str], aliases: Mapping[str, str] | None = None):
        types = dict(columns) if isinstance(columns, Mapping) else dict.fromkeys(columns, "text")
        if not types:
            raise ValueError("a file source needs at least one column")
        for name, type_ in types.items():
            if not _NAME.match(name):
                raise ValueError(f"column name {name!r} must be a plain lower-case identifier")
            if name in RESERVED_COLUMNS:
                raise ValueError(f"column name {name!r} is reserved ({', '.join(RESERVED_COLUMNS)})")
            if not _TYPE.match(type_):
                raise ValueError(f"column {name!r}: {type_!r} is not a plain Postgres type name")
        self.types = types
        self.names = tuple(types)
        self._lookup = {n: n for n in self.names}
        for alias, target in (aliases or {}).items():
            key = alias.strip().lower()
            if target not in types:
                raise ValueError(f"alias {alias!r} names no column ({target!r})")
            if self._lookup.get(key, target) != target:
                raise ValueError(f"alias {alias!r} is already the name of column {self._lookup[key]!r}")
            self._lookup[key] = target

    def resolve(self, name: str) -> str | None:
        """The column a header or key names, or None."""
        return self._lookup.get(name.strip().lower())

    def kind(self, name: str) -> str:
        """The column's kind: jsonb, json, or "" for any other type."""
        type_ = self.types[name]
        return type_ if type_ in _JSON_TYPES else ""

    def known(self) -> str:
        return ", ".join(sorted(self._lookup))


class Reader(Protocol):
    def files(self, root: Path) -> list[Path]:
        """The files of the source, in staging order."""

    def read(self, stream: BinaryIO, columns: Columns, tally: Tally) -> Iterator[tuple[int, Values | BadRow]]:
        """(line, row) for each row of one file (an open binary stream): the row is the text
        COPY writes for each of `columns.names`, in that order (None: NULL), and no text holds
        a NUL character (a row with one is a BadRow); or a BadRow. Blank rows are only counted
        in `tally`; FileRejected if the file cannot be read as a whole."""


def _listed(root: Path, suffix: str, skip: Sequence[str] = ()) -> list[Path]:
    if not root.is_dir():
        raise SourceError(f"{root}: not a directory")
    skipped = {s.lower() for s in skip}
    return sorted(
        (p for p in root.iterdir() if p.suffix.lower() == suffix and not p.name.startswith(".")
         and p.name.lower() not in skipped and p.is_file()),
        key=lambda p: p.name,
    )


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), "a number")


class _BadValue(Exception):
    pass


def _json_text(value: Any, kind: str) -> str:
    """The text COPY writes for a JSON value that is not a plain string for a plain column:
    true or false, a number, or the value as JSON (a string too, for a json column)."""
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    text = json.dumps(value, ensure_ascii=False)
    if kind == "jsonb" and "\\u0000" in text and _JSON_NUL.search(text):
        raise _BadValue("holds a NUL character (\\u0000), which jsonb cannot store")
    return text


class _KeyMap:
    """Maps a JSON object's keys to columns (unknown keys are ignored, each key's column is
    looked up once) and its values to the text COPY writes."""

    _UNSEEN = ("", "")

    def __init__(self, columns: Columns):
        self.columns = columns
        self._memo: dict[str, tuple[str | None, str]] = {}

    def values(self, obj: dict[str, Any]) -> Values | str:
        """`row` as Values."""
        row = self.row(obj)
        return row if isinstance(row, str) else tuple(map(row.get, self.columns.names))

    def row(self, obj: dict[str, Any]) -> dict[str, str | None] | str:
        """The row, or the reason it is bad (two keys naming one column, a value Postgres
        cannot store)."""
        row: dict[str, str | None] = {}
        memo = self._memo
        for key, value in obj.items():
            target, kind = memo.get(key, self._UNSEEN)
            if target == "":
                target = self.columns.resolve(key)
                kind = self.columns.kind(target) if target else ""
                memo[key] = (target, kind)
            if target is None:
                continue
            if target in row:
                named = [k for k in obj if memo.get(k, self._UNSEEN)[0] == target]
                return f"keys {' and '.join(map(repr, named))} both name column {target}"
            if value is None:
                row[target] = None
            elif type(value) is str and not kind:
                if "\x00" in value:
                    return f"column {target} holds a NUL character, which Postgres cannot store"
                row[target] = value
            else:
                try:
                    row[target] = _json_text(value, kind)
                except _BadValue as error:
                    return f"column {target} {error}"
        return row


class JsonLines:
    """One file, one JSON object per line. Blank lines are counted; a line that is not a JSON
    object is a bad row. Keys that name no column are ignored. A string is written as it is, a
    number, true or false as its JSON text, an object or array as JSON; so is any value of a
    json or jsonb column."""

    def files(self, root: Path) -> list[Path]:
        if not root.is_file():
            raise SourceError(f"{root}: not a file (a JSON Lines source is one file)")
        return [root]

    def read(self, stream: BinaryIO, columns: Columns, tally: Tally) -> Iterator[tuple[int, Values | BadRow]]:
        keys = _KeyMap(columns)
        for line, raw in enumerate(stream, 1):
            if line == 1 and raw.startswith(_BOM):  # json.loads allows it, but a blank line with one is blank
                raw = raw[len(_BOM):]
            if not raw.strip():
                tally.blank += 1
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
                yield line, BadRow(line, f"not JSON: {error}")
                continue
            if not isinstance(obj, dict):
                yield line, BadRow(line, f"not a JSON object but {_json_type(obj)}")
                continue
            row = keys.values(obj)
            yield line, (BadRow(line, row) if isinstance(row, str) else row)


class ResearchJson:
    """A directory of `*.json` files, each `{"poi_id": ..., "facts": [{...}, ...]}` (or
    `area_id`): one row per fact, numbered by its position in `facts`, with the file's
    `parent_keys` copied in. `manifest.json` (any of `skip`) is not a source file. A fact that is
    not an object, or that names another parent than its file, is a bad row; a file that is not
    such an object is rejected. Values become text as in JsonLines."""

    def __init__(self, parent_keys: Sequence[str] = ("poi_id", "area_id"), skip: Sequence[str] = ("manifest.json",)):
        self.parent_keys, self.skip = tuple(parent_keys), tuple(skip)

    def files(self, root: Path) -> list[Path]:
        return _listed(root, ".json", self.skip)

    def read(self, stream: BinaryIO, columns: Columns, tally: Tally) -> Iterator[tuple[int, Values | BadRow]]:
        try:
            doc = json.loads(stream.read())  # bytes: a BOM is allowed
        except (ValueError, RecursionError) as error:
            raise FileRejected(f"not JSON: {error}") from None
        if not isinstance(doc, dict):
            raise FileRejected(f"not a JSON object but {_json_type(doc)}")
        facts = doc.get("facts")
        if not isinstance(facts, list):
            raise FileRejected("has no 'facts' array" if facts is None else f"'facts' is {_json_type(facts)}, not an array")
        parents = {k: doc[k] for k in self.parent_keys if doc.get(k) is not None}
        keys = _KeyMap(columns)
        for position, fact in enumerate(facts, 1):
            if not isinstance(fact, dict):
                yield position, BadRow(position, f"fact is not a JSON object but {_json_type(fact)}")
                continue
            conflict = next((k for k, v in parents.items() if fact.get(k) not in (None, v)), None)
            if conflict is not None:
                yield position, BadRow(position, f"fact's {conflict} {fact[conflict]!r} is not its file's {parents[conflict]!r}")
                continue
            row = keys.values({**fact, **parents})
            yield position, (BadRow(position, row) if isinstance(row, str) else row)


class CsvFiles:
    """A directory of `*.csv` files (UTF-8, a BOM allowed), each with a header row. Columns are
    mapped by header name (or alias); a column the header lacks is NULL, and so is an empty
    field. A row whose fields are all empty (or spaces) is blank (counted); a row with another
    number of fields than the header, or with a NUL character, is a bad row. A header naming no
    column (or two names of one column) rejects the file, naming the header; so does text that
    is not UTF-8. A field is written as it is, whatever its column's type."""

    def files(self, root: Path) -> list[Path]:
        return _listed(root, ".csv")

    def read(self, stream: BinaryIO, columns: Columns, tally: Tally) -> Iterator[tuple[int, Values | BadRow]]:
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        reader = csv.reader(text)
        width = 0  # the header's fields, once read
        start = 1
        try:
            for record in reader:
                line, start = start, reader.line_num + 1
                joined = "".join(record)
                if not joined.strip():
                    tally.blank += 1
                    continue
                if not width:
                    header = self._header(record, columns)
                    width = len(header)
                    # Each column's field, or the None appended to every row for a missing one.
                    pick = itemgetter(*(header.index(n) if n in header else width for n in columns.names))
                    single = len(columns.names) == 1
                    continue
                if len(record) != width:
                    yield line, BadRow(line, f"{len(record)} fields where the header has {width}")
                    continue
                if "\x00" in joined:
                    yield line, BadRow(line, "holds a NUL character, which Postgres cannot store")
                    continue
                record.append(None)  # type: ignore[arg-type]  # the missing columns' value
                row = (pick(record),) if single else pick(record)
                yield line, (tuple(v or None for v in row) if "" in row else row)
        except csv.Error as error:
            raise FileRejected(f"line {reader.line_num}: {error}") from None
        except UnicodeDecodeError:
            raise FileRejected(_not_utf8(stream)) from None
        finally:
            text.detach()  # the stream stays open for its owner

    @staticmethod
    def _header(record: list[str], columns: Columns) -> list[str]:
        names = [columns.resolve(cell) for cell in record]
        unknown = [f"{cell.strip()!r} (column {i})" for i, (cell, name) in enumerate(zip(record, names), 1) if name is None]
        if unknown:
            raise FileRejected(f"unknown header {', '.join(unknown)}; known: {columns.known()}")
        for name in set(names):
            cells = [cell.strip() for cell, n in zip(record, names) if n == name]
            if len(cells) > 1:
                raise FileRejected(f"headers {' and '.join(map(repr, cells))} both name column {name}")
        return names  # type: ignore[return-value]  # no None left


def _not_utf8(stream: BinaryIO) -> str:
    """Where a file that failed to decode first stops being UTF-8."""
    stream.seek(0)
    for n, raw in enumerate(stream, 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            return f"line {n}: not UTF-8 ({error.reason} at byte {error.start})"
    return "not UTF-8"


@dataclass(frozen=True)
class SourceFile:
    path: Path
    #: The path relative to the source (its file name), as the ledger and staging table say.
    name: str
    size: int
    sha256: str


def not_found(root: Path) -> str:
    """One line for a source path that does not exist. Users run the worker in a container and
    pass a path of their own machine, so it says where the path was looked up, and how files
    reach the container (the compose file's worker service mounts ./data at /data). It holds
    in and out of a container alike, so it needs no guess which (/.dockerenv exists only under
    Docker, not under Podman or Kubernetes); a relative path is shown resolved, since inside
    the image it is relative to /app."""
    shown = root if root.is_absolute() else f"{root} (that is {Path.cwd() / root})"
    return (
        f"{shown}: no such file or directory (looked up in the worker's own filesystem: in a container, the container's,"
        f" not the host's; with docker compose, put it under ./data, which the worker service mounts at /data,"
        f" and pass --source /data/{root.name})"
    )


def source_files(root: Path | str, reader: Reader) -> list[SourceFile]:
    """The source's files in staging order, each with its size and sha256."""
    root = Path(root)
    if not root.exists():
        raise SourceMissing(not_found(root))
    found = []
    for path in reader.files(root):
        digest = hashlib.sha256()
        try:
            with path.open("rb") as f:
                size = 0
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as error:
            raise SourceError(f"{path}: cannot be read ({error.strerror or error})") from None
        found.append(SourceFile(path, path.name, size, digest.hexdigest()))
    return found


def identity(files: Sequence[SourceFile]) -> tuple[tuple[str, str], ...]:
    """The sorted (relative path, sha256) of the files: what defines a source's content."""
    return tuple(sorted((f.name, f.sha256) for f in files))


def fingerprint(files: Sequence[SourceFile]) -> str:
    """One digest of `identity(files)`."""
    return hashlib.sha256(json.dumps(identity(files)).encode()).hexdigest()


@dataclass(frozen=True)
class LedgerEntry:
    path: str
    size: int
    sha256: str
    status: str
    rows: int
    blank_rows: int
    bad_rows: int
    first_seq: int | None
    last_seq: int | None
    duplicate_of: str | None
    error: str | None
    staged_at: datetime


_LEDGER_COLUMNS = [f.name for f in LedgerEntry.__dataclass_fields__.values()]


@dataclass
class StageReport:
    """The ledger after staging (every file it records, in path order), what this call recorded
    and what it found already done; `counters` and `failures` come from the whole ledger, so
    they are the same whether staging ran once or was resumed."""

    entries: list[LedgerEntry]
    #: Files this call recorded in the ledger (staged, empty, failed or duplicate).
    recorded: list[str] = field(default_factory=list)
    #: Files the ledger already had.
    skipped: list[str] = field(default_factory=list)
    #: Paths the ledger has that the source no longer holds (their rows stay staged).
    missing: list[str] = field(default_factory=list)

    @property
    def counters(self) -> dict[str, int]:
        by_status = {s: [e for e in self.entries if e.status == s] for s in STATUSES}
        return {
            "files_staged": len(by_status["staged"]),
            "files_empty": len(by_status["empty"]),
            "files_failed": len(by_status["failed"]),
            "files_duplicate": len(by_status["duplicate"]),
            "rows_staged": sum(e.rows for e in self.entries),
            "blank_rows": sum(e.blank_rows for e in self.entries),
            "bad_rows": sum(e.bad_rows for e in self.entries),
        }

    @property
    def failures(self) -> list[Failure]:
        """One per failed file: its path (the key) and why."""
        return [Failure(e.path, e.error or "failed") for e in self.entries if e.status == "failed"]

    def result(self) -> BatchResult:
        """The report as a staging step's result: its counters, and its failed files."""
        return BatchResult(self.counters, self.failures)


class FileSource:
    """The files under `root`, read by `reader`, staged into `staging` and recorded in `ledger`
    (both named through the job's sink: in a dry run, `pg_temp` tables). `columns`: names (text)
    or name -> Postgres type; a value a typed column refuses fails its whole file, so stage as
    text what the job must check row by row. `chunk_rows`: rows copied between two checks for
    a stop request.

    Call `stage()` from a step or a phase's `prepare` (it is idempotent), then walk `keyset()`."""

    def __init__(
        self,
        ctx: JobContext,
        root: Path | str,
        reader: Reader,
        *,
        staging: TableName,
        ledger: TableName,
        columns: Sequence[str] | Mapping[str, str],
        aliases: Mapping[str, str] | None = None,
        chunk_rows: int = 10_000,
    ):
        self.ctx, self.root, self.reader = ctx, Path(root), reader
        self.columns = Columns(columns, aliases)
        self.staging = ctx.sink.scratch(staging)
        self._staging_name = staging.name
        self.ledger = ctx.sink.scratch(ledger)
        self.chunk_rows = max(1, chunk_rows)

    # -- identity ---------------------------------------------------------------------------

    def files(self) -> list[SourceFile]:
        return source_files(self.root, self.reader)

    def identity(self) -> tuple[tuple[str, str], ...]:
        return identity(self.files())

    def fingerprint(self) -> str:
        return fingerprint(self.files())

    # -- staging ----------------------------------------------------------------------------

    def stage(self) -> StageReport:
        """Stage every file the ledger does not have yet, in order; return the ledger's report.
        Raises StopRequested (the file in progress rolled back), SourceChanged, SourceError, or
        a database error (the file in progress rolled back; calling again resumes)."""
        files = self.files()
        self._create_tables()
        before = {e.path: e for e in self.entries()}
        changed = [f for f in files if f.name in before and before[f.name].sha256 != f.sha256 and before[f.name].status != "failed"]
        if changed:
            names = ", ".join(f"{f.name} (staged with sha256 {before[f.name].sha256[:12]}..., now {f.sha256[:12]}...)" for f in changed)
            raise SourceChanged(f"{self.root}: already staged files changed: {names}; restore them, or stage the new files as another source")
        recorded, skipped = [], []
        for f in files:
            self.ctx.stop.sleep(0)
            (recorded if self._stage_file(f) else skipped).append(f.name)
        names = {f.name for f in files}
        entries = self.entries()
        return StageReport(entries, recorded, skipped, missing=[e.path for e in entries if e.path not in names])

    def _create_tables(self) -> None:
        columns = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in self.columns.types.items()]
        with self.ctx.sink.scratch_transaction() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (path text PRIMARY KEY, size bigint NOT NULL, sha256 text NOT NULL,"
                    " status text NOT NULL CHECK (status IN ({statuses})), rows bigint NOT NULL DEFAULT 0,"
                    " blank_rows bigint NOT NULL DEFAULT 0, bad_rows bigint NOT NULL DEFAULT 0,"
                    " first_seq bigint, last_seq bigint, duplicate_of text, error text,"
                    " staged_at timestamptz NOT NULL DEFAULT now())"
                ).format(self.ledger, statuses=sql.SQL(", ").join(map(sql.Literal, STATUSES)))
            )
            cur.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} (seq bigint PRIMARY KEY, file text NOT NULL, line integer NOT NULL, {}, error text)").format(
                    self.staging, sql.SQL(", ").join(columns)
                )
            )
            cur.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (self.staging.as_string(cur),),
            )
            have = [r[0] for r in cur.fetchall()]
        want = ["seq", "file", "line", *self.columns.names, "error"]
        if have != want:
            raise SourceError(f"staging table {self.staging.as_string(None)} has columns {have}, not {want}: drop it or use another name")

    def _stage_file(self, f: SourceFile) -> bool:
        """Stage one file in one transaction with its ledger row; False if the ledger has it."""
        try:
            with self.ctx.sink.scratch_transaction() as cur:
                # One stager at a time (the job's lease should see to it anyway).
                cur.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(self.ledger))
                cur.execute(sql.SQL("SELECT sha256, status FROM {} WHERE path = %s").format(self.ledger), (f.name,))
                found = cur.fetchone()
                if found is not None:
                    if found[0] == f.sha256:
                        return False
                    if found[1] != "failed":
                        raise SourceChanged(f"{f.path}: changed since it was staged (sha256 {found[0][:12]}..., now {f.sha256[:12]}...)")
                    cur.execute(sql.SQL("DELETE FROM {} WHERE path = %s").format(self.ledger), (f.name,))
                cur.execute(
                    sql.SQL("SELECT min(path) FROM {} WHERE sha256 = %s AND status = 'staged'").format(self.ledger), (f.sha256,)
                )
                twin = cur.fetchone()[0]
                if twin is not None:
                    self._record(cur, f, "duplicate", duplicate_of=twin)
                    return True
                self._copy(cur, f)
            return True
        except FileRejected as rejected:
            error = str(rejected)
        except psycopg.DataError as refused:  # a value a typed column refuses
            error = self._refusal(f, refused)
        with self.ctx.sink.scratch_transaction() as cur:
            cur.execute(sql.SQL("DELETE FROM {} WHERE path = %s").format(self.ledger), (f.name,))
            self._record(cur, f, "failed", error=error)
        return True

    def _copy(self, cur: psycopg.Cursor, f: SourceFile) -> None:
        cur.execute(sql.SQL("SELECT coalesce(max(last_seq), 0) FROM {}").format(self.ledger))
        first = seq = cur.fetchone()[0] + 1
        names, nulls = self.columns.names, (None,) * len(self.columns.names)
        tally, rows, bad = Tally(), 0, 0
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            self.staging, sql.SQL(", ").join(map(sql.Identifier, ("seq", "file", "line", *names, "error")))
        )
        stop, chunk, until_check = self.ctx.stop, self.chunk_rows, self.chunk_rows
        with f.path.open("rb") as stream:
            with cur.copy(statement) as copy:
                write = copy.write_row
                for line, row in self.reader.read(stream, self.columns, tally):
                    if type(row) is tuple:
                        write((seq, f.name, line, *row, None))
                        rows += 1
                    else:
                        write((seq, f.name, line, *nulls, row.error))  # type: ignore[union-attr]  # a BadRow
                        bad += 1
                    seq += 1
                    until_check -= 1
                    if not until_check:
                        stop.sleep(0)  # a stop rolls this file back; the next run stages it whole
                        until_check = chunk
            # The bytes staged are the bytes hashed before: hash the open file again.
            stream.seek(0)
            digest = hashlib.sha256()
            while data := stream.read(1 << 20):
                digest.update(data)
        if digest.hexdigest() != f.sha256:
            raise SourceChanged(f"{f.path}: changed while it was being staged; run again")
        stop.sleep(0)  # the last moment a stop can still roll the file back
        status = "staged" if rows + bad else "empty"
        self._record(
            cur, f, status, rows=rows, blank=tally.blank, bad=bad,
            first_seq=first if status == "staged" else None, last_seq=seq - 1 if status == "staged" else None,
        )

    def _refusal(self, f: SourceFile, refused: psycopg.DataError) -> str:
        """What Postgres refused, at the file's line: COPY's context counts the rows copied."""
        primary = refused.diag.message_primary or str(refused)
        where = re.search(r"\bline (\d+)(?:, column (\w+))?", refused.diag.context or "")
        if where is None:
            return f"refused by Postgres: {primary}"
        nth, column = int(where.group(1)), where.group(2)
        line: int | None = None
        with f.path.open("rb") as stream:
            rows = self.reader.read(stream, self.columns, Tally())
            try:
                line = next((n for i, (n, _) in enumerate(rows, 1) if i == nth), None)
            finally:
                getattr(rows, "close", lambda: None)()  # a generator's cleanup, before the stream closes
        return f"{f'line {line}' if line else f'row {nth}'}{f', column {column}' if column else ''}: refused by Postgres: {primary}"

    def _record(
        self, cur: psycopg.Cursor, f: SourceFile, status: str, *, rows: int = 0, blank: int = 0, bad: int = 0,
        first_seq: int | None = None, last_seq: int | None = None, duplicate_of: str | None = None, error: str | None = None,
    ) -> None:
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (path, size, sha256, status, rows, blank_rows, bad_rows, first_seq, last_seq, duplicate_of, error)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(self.ledger),
            (f.name, f.size, f.sha256, status, rows, blank, bad, first_seq, last_seq, duplicate_of, error),
        )

    # -- reading ----------------------------------------------------------------------------

    def entries(self) -> list[LedgerEntry]:
        """The ledger, in path order."""
        with self.ctx.sink.scratch_transaction() as cur:
            cur.execute(
                sql.SQL("SELECT {} FROM {} ORDER BY path").format(
                    sql.SQL(", ").join(map(sql.Identifier, _LEDGER_COLUMNS)), self.ledger
                )
            )
            return [LedgerEntry(*r) for r in cur.fetchall()]

    def report(self) -> StageReport:
        return StageReport(self.entries())

    def keyset(self, columns: Sequence[str | sql.Composable] | None = None) -> KeysetQuery:
        """Pages of the staging table by `seq`: by default file, line, the caller's columns and error."""
        return KeysetQuery(self.staging, "seq", list(columns) if columns is not None else ["file", "line", *self.columns.names, "error"])

    def index_by(self, *columns: str) -> None:
        """Index the staged rows by each of `columns` (then `seq`) and analyse them, so each page
        of a grouped walk over one of them is index range scans (a freshly staged table has no
        statistics: without them the planner scans it whole for every page)."""
        with self.ctx.sink.scratch_transaction() as cur:
            for column in columns:
                cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}, seq)").format(
                    sql.Identifier(f"{self._staging_name}_{column}"[:63]), self.staging, sql.Identifier(column)
                ))
            cur.execute(sql.SQL("ANALYZE {}").format(self.staging))

    def count(self) -> int:
        """Rows staged (bad rows included): what a walk over `seq` meets."""
        with self.ctx.sink.scratch_transaction() as cur:
            cur.execute(sql.SQL("SELECT coalesce(sum(rows + bad_rows), 0) FROM {}").format(self.ledger))
            return int(cur.fetchone()[0])

    def last_seq(self) -> int | None:
        """The last `seq` staged: a walk past it has met every row (None before any row)."""
        with self.ctx.sink.scratch_transaction() as cur:
            cur.execute(sql.SQL("SELECT max(last_seq) FROM {}").format(self.ledger))
            return cur.fetchone()[0]

    def drop(self) -> None:
        """Drop the staging table and the ledger (say, when the job has used them)."""
        with self.ctx.sink.scratch_transaction() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(self.staging, self.ledger))
