"""What a job author writes: a Job that lists its phases, and phases that fetch and process.

The author never touches the cursor, the checkpoint, sleeps, signals, retries or progress: the
engine owns those (as in job-iteration's build_enumerator/each_iteration). A keyset phase says
how to fetch the page after a key and how to process one batch; a step is a one-off idempotent
action such as a schema change. Every write must be idempotent, because a batch whose checkpoint
was not saved before a crash is processed again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, Iterable, Mapping, Sequence, TypeVar

from psycopg import sql

from utils.keyset import Key, KeyKind
from utils.pg import ROW_ERRORS, Postgres
from utils.typesense import TypesenseIndex
from worker import tables
from worker.config import Settings
from worker.exceptions import SchemaMismatch
from worker.job_settings import Run, read_job_settings
from worker.sinks import Sink
from worker.stop import StopFlag

if TYPE_CHECKING:  # worker.failures imports Failure from here
    from worker.failures import FailureStore
    from worker.throttle import Indicator

Row = Any
Counters = dict[str, int]
S = TypeVar("S")


@dataclass(frozen=True)
class Failure:
    """A row or document that could not be written; the engine records and counts it."""

    key: str
    error: str
    code: int | None = None


@dataclass
class BatchResult:
    """Counters taken from the writes' own answers (they must come out the same when a batch
    is redone), and the rows the destination rejected."""

    counters: Counters = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


@dataclass
class JobContext:
    """Everything a job may use. In a dry run `sink` writes nothing; reads go to the real servers."""

    settings: Settings
    pg: Postgres
    #: The search index, for a job whose `stores` include "typesense"; None otherwise.
    index: TypesenseIndex | None
    sink: Sink
    #: The failures recorded so far, to read (the engine records them); in a dry run too.
    failures: "FailureStore | None" = None
    #: Only for long single steps (say, loading a scratch table) that should end early on a
    #: stop request: call `stop.sleep(0)`, which raises StopRequested. Batches need nothing.
    stop: StopFlag = field(default_factory=StopFlag)
    #: The job's own settings (an instance of its `settings_class`), None for a job without.
    job_settings: Any = None
    #: The run: the job plus the settings that define its work; by default the job's one run.
    run: Run | None = None
    #: Retries transient failures (`utils.http.HttpUnavailable`, a server's lost connection)
    #: of one call, as the engine does a batch: `ctx.retry(fn, "what")`. For a batch that makes
    #: several requests to a provider, so that one failed request is retried alone.
    retry: Callable[[Callable[[], Any], str], Any] = lambda fn, what: fn()

    def recorded_failures(self, phase: str) -> list[dict[str, Any]]:
        """The failures recorded so far for `phase` of this run (key, error, code, ...)."""
        if self.failures is None or self.run is None:
            return []
        return [f for f in self.failures.list(self.run.name) if f["phase"] == phase]


class Page(Sequence[Row], Generic[S]):
    """A page that `fetch` had the database sum up: its size, its last key and what the phase
    needs of it (`summary`), without a Python object per row. The rows themselves are read
    (`rows`) only if the engine splits the batch to isolate a bad row. `final`: whether it is the
    walk's last page, when its size cannot tell (by default a page shorter than asked is)."""

    def __init__(
        self, size: int, last_key: Key | None, summary: S, rows: Callable[[], Sequence[Row]], final: bool | None = None
    ):
        self.size, self.last_key, self.summary, self.final = size, last_key, summary, final
        self._read_rows = rows
        self._rows: Sequence[Row] | None = None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):  # type: ignore[no-untyped-def]  # Sequence's int and slice forms
        if self._rows is None:
            self._rows = self._read_rows()
        return self._rows[index]


@dataclass
class Differences:
    """What a read-only comparison of source and destination found, by kind: counts, and the
    first few keys of each."""

    kinds: tuple[str, ...]
    examples_per_kind: int = 5
    counts: dict[str, int] = field(init=False)
    examples: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = dict.fromkeys(self.kinds, 0)
        self.examples = {kind: [] for kind in self.kinds}

    def add(self, kind: str, keys: Sequence[str]) -> None:
        self.counts[kind] += len(keys)
        self.examples[kind].extend(keys[: self.examples_per_kind - len(self.examples[kind])])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def report(self) -> dict[str, Any]:
        by_kind = {k: {"count": self.counts[k], "examples": self.examples[k]} for k in self.kinds}
        return {"differences": self.total, "by_kind": by_kind}


def is_last_page(rows: Sequence[Row], limit: int) -> bool:
    """Whether the walk ends with this page (see Page.final)."""
    if isinstance(rows, Page) and rows.final is not None:
        return rows.final
    return len(rows) < limit


class Phase(ABC):
    name: ClassVar[str]


class Step(Phase):
    """Runs once; on a restart before its checkpoint was saved it runs again, so it must be
    idempotent. A step that checks what the phases before it wrote sets `verifies` and raises
    `worker.exceptions.VerificationFailed` with a summary when it finds a mismatch: the run
    fails (exit 8) and a later run, after the cause is fixed, checks again. A dry run, which
    wrote nothing, skips such a step."""

    verifies: bool = False

    def tally(self) -> Counters:
        """Counts taken before `run` writes anything (say, fields missing); see KeysetPhase.tally."""
        return {}

    @abstractmethod
    def run(self) -> Counters | BatchResult:
        """Do the step; return its counters, or a BatchResult when it also found failures
        (a file it could not stage): the engine records them, and since the step runs whole,
        resolves those it recorded before that it no longer finds."""


class KeysetPhase(Phase):
    """Walks a source in key order, one batch at a time."""

    batch_size: int = 1000
    #: The smallest batch the engine's adaptive sizing may choose (BATCH_SIZE_MIN by default):
    #: for a phase whose batch fans out into requests in flight at once, fewer rows would leave
    #: request slots idle however long each batch takes.
    batch_size_min: int | None = None
    #: The counter the engine adds each batch's row count to (rows walked, failed or not).
    scanned_counter: str | None = None
    #: True when a fresh `prepare` may run in the background from the job's start, alongside the
    #: phases before this one, because nothing they write changes what `prepare` reads (say,
    #: loading a scratch table).
    prepare_early: bool = False
    #: Errors caused by some rows of a batch: the engine splits the batch to isolate those rows,
    #: writes the rest and records each bad row as a failure.
    row_errors: tuple[type[BaseException], ...] = ROW_ERRORS

    @property
    def key_kind(self) -> KeyKind:
        """How keys are stored in the checkpoint; known after `prepare`."""
        return KeyKind.INTEGER

    def prepare(self, resuming: bool) -> None:
        """Called when the phase starts or resumes, before `count` and the first `fetch`."""

    def count(self) -> int | None:
        """Total rows the phase will walk, for percent and ETA; None when unknown."""
        return None

    @abstractmethod
    def fetch(self, after: Key | None, limit: int) -> Sequence[Row]:
        """Up to `limit` rows with key > `after` (all rows from the start when None), in key order."""

    def key_of(self, row: Row) -> Key:
        return row[0]

    def last_key(self, rows: Sequence[Row]) -> Key:
        """The key the next page starts after; a `Page` knows it without reading its rows."""
        return rows.last_key if isinstance(rows, Page) else self.key_of(rows[-1])

    def tally(self, rows: Sequence[Row]) -> Counters:
        """Counts of rows that need a change, read before any write. The engine
        saves them with the batch's intent, so a batch redone after a crash, which finds its own
        earlier writes, still counts what the first attempt changed."""
        return {}

    @abstractmethod
    def process(self, rows: Sequence[Row]) -> BatchResult:
        """Write one batch. May be called again with the same rows, or with a part of them."""

    def fetch_keys(self, keys: Sequence[Key]) -> Sequence[Row]:
        """The rows with these keys, as `fetch` returns them: used to retry recorded failures."""
        raise NotImplementedError(f"phase {self.name!r} cannot re-fetch rows by key")

    def finish(self) -> None:
        """Called once after the last batch of each walk, before the next walk or phase starts."""

    #: How many times at most the engine walks the phase. After a walk that found `differences`
    #: it walks it again from the start (a fresh `prepare`), as long as passes are left.
    max_passes: int = 1
    #: The counter the engine adds 1 to each time a walk of the phase ends.
    passes_counter: str | None = None

    def differences(self, walked: Counters) -> int:
        """What a walk found to repair, from the counters it added: while > 0 another walk
        follows; if the last allowed walk still found some, the job ends
        `completed_with_differences`."""
        return 0


@dataclass(frozen=True)
class Argument:
    """One command-line argument of a verb, as `argparse.ArgumentParser.add_argument` takes it."""

    flags: tuple[str, ...]
    options: dict[str, Any]

    @classmethod
    def of(cls, *flags: str, **options: Any) -> "Argument":
        return cls(flags, options)


@dataclass(frozen=True)
class Verb:
    """A command a job adds to `python -m worker` (`rollback`, `report`): see `verb`."""

    name: str
    help: str
    arguments: tuple[Argument, ...]
    method: str
    #: Whether the command acts on one run (needs the job's required settings, its `--source`),
    #: or on something the run left behind that it names itself (a rollback of an import id).
    names_run: bool = True


def verb(
    name: str, help: str, *arguments: Argument, names_run: bool = True
) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Make a Job method the command `python -m worker NAME --job JOB [job flags] [arguments]`.

    The method takes the parsed arguments (`argparse.Namespace`) and returns its report, a
    dict: printed as `key: value` lines, or as JSON with `--json`. It runs after the job's
    `check`, with the job's settings, logging and exit codes; its writes go through
    `ctx.sink` like a phase's, so `--dry-run` holds for it too. To fail, raise a WorkerError.
    `names_run=False`: the command needs none of the job's required settings (see Verb)."""

    def mark(method: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        method.__verb__ = Verb(name, help, arguments, method.__name__, names_run)  # type: ignore[attr-defined]
        return method

    return mark


def require_columns(pg: Postgres, table: sql.Identifier, columns: Iterable[str], job: str, needs: str, variable: str) -> None:
    """For a job's `check`: SchemaMismatch (exit 5) unless `table` exists with every one of
    `columns`; the message says what `job` needs it for (`needs`: "its codes table"), the
    `variable` that names it, and where the table's definition is (worker.tables)."""
    with pg.connection().cursor() as cur:
        name = table.as_string(cur)
        cur.execute("SELECT to_regclass(%s)", (name,))
        if cur.fetchone()[0] is None:
            raise SchemaMismatch(tables.missing_tables([name], job, needs, variable))
        cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", (name,))
        missing = sorted(set(columns) - {r[0] for r in cur.fetchall()})
    if missing:
        raise SchemaMismatch(f"table {name} lacks column(s) {', '.join(missing)}: job {job} needs them in {needs} ({tables.table_hint(job, variable)})")


class Job(ABC):
    name: ClassVar[str]
    #: The checkpoint document's `_id` (of the job's default run: see `Run`).
    checkpoint_id: ClassVar[str]
    #: The stores the job uses besides Postgres and MongoDB (see config.STORE_REQUIRES): only
    #: these are configured, required, preflighted and throttled on.
    stores: ClassVar[frozenset[str]] = frozenset()
    #: A frozen dataclass of `worker.job_settings.setting` fields: the job's own settings and
    #: run parameters (`ctx.job_settings` holds its values).
    settings_class: ClassVar[type | None] = None

    def __init__(self, ctx: JobContext):
        self.ctx = ctx

    @cached_property
    def run(self) -> Run:
        """This run of the job: the context's, else the one its settings name (the job's one
        default run for a job without settings, or built without a context)."""
        ctx: JobContext | None = self.__dict__.get("ctx")
        if ctx is not None and ctx.run is not None:
            return ctx.run
        return Run.of(self.name, self.checkpoint_id, ctx.job_settings if ctx is not None else None)

    @classmethod
    def read_settings(cls, env: Mapping[str, str], flags: Mapping[str, Any] | None = None, required: bool = True) -> Any:
        """The job's settings from `env`, overridden by command-line `flags` (see job_settings)."""
        return read_job_settings(cls.settings_class, env, flags, required)

    @classmethod
    def verbs(cls) -> dict[str, Verb]:
        """The commands the job adds, by name."""
        found = (getattr(getattr(cls, attr), "__verb__", None) for attr in dir(cls))
        return {v.name: v for v in found if isinstance(v, Verb)}

    def check(self) -> None:
        """Fail fast, before any write: tables, collections and credentials are as the job
        needs; for a service of the job's own (an HTTP provider), that it answers and takes
        the job's credentials."""

    def indicators(self) -> Sequence["Indicator"]:
        """Health signals of the job's own services (say, a provider's rate-limit headroom):
        the engine pauses on them as on Postgres's and Typesense's (worker.throttle)."""
        return ()

    @abstractmethod
    def phases(self) -> Sequence[Phase]: ...

    def status(self) -> dict[str, Any]:
        """What the job's own tables say of its progress (say, coverage), which `status`
        prints beside the checkpoints; nothing by default."""
        return {}

    def verify(self) -> Differences:
        """Compare the stores read-only (`python -m worker verify`); the job is given a dry
        run's context, so whatever the comparison needs to write goes to temporary tables."""
        raise NotImplementedError(f"job {self.name!r} has no verify")
