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
from typing import Any, ClassVar, Sequence

from utils.keyset import Key, KeyKind
from utils.pg import ROW_ERRORS, Postgres
from utils.typesense import TypesenseIndex
from worker.config import Settings
from worker.sinks import Sink
from worker.stop import StopFlag

Row = Any
Counters = dict[str, int]


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
    index: TypesenseIndex
    sink: Sink
    #: Only for long single steps (say, loading a scratch table) that should end early on a
    #: stop request: call `stop.sleep(0)`, which raises StopRequested. Batches need nothing.
    stop: StopFlag = field(default_factory=StopFlag)

    @property
    def dry_run(self) -> bool:
        return self.settings.dry_run


class Phase(ABC):
    name: ClassVar[str]


class Step(Phase):
    """Runs once; on a restart before its checkpoint was saved it runs again, so it must be idempotent."""

    def tally(self) -> Counters:
        """Counts taken before `run` writes anything (say, fields missing); see KeysetPhase.tally."""
        return {}

    @abstractmethod
    def run(self) -> Counters: ...


class KeysetPhase(Phase):
    """Walks a source in key order, one batch at a time."""

    batch_size: int = 1000
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
        """The key the next page starts after. A phase whose pages are not plain lists (say,
        aggregated by the database) may know it without reading the last row."""
        return self.key_of(rows[-1])

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
        """Called once after the last batch, before the next phase starts."""


class Job(ABC):
    name: ClassVar[str]
    #: The checkpoint document's `_id`.
    checkpoint_id: ClassVar[str]

    def __init__(self, ctx: JobContext):
        self.ctx = ctx

    def check(self) -> None:
        """Fail fast, before any write: tables, collections and credentials are as the job needs."""

    @abstractmethod
    def phases(self) -> Sequence[Phase]: ...
