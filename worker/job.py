"""What a job author writes: a Job that lists its phases, and phases that fetch and process.

The author never touches the cursor, the checkpoint, sleeps, signals, retries or progress: the
engine owns those (as in job-iteration's build_enumerator/each_iteration). A keyset phase says
how to fetch the page after a key and how to process one batch; a step is a one-off idempotent
action such as a schema change. Every write must be idempotent, because a batch whose checkpoint
was not saved before a crash is processed again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from utils.keyset import Key, KeyKind
from utils.pg import Postgres
from utils.typesense import TypesenseIndex
from worker.config import Settings
from worker.sinks import Sink

Row = Any
Counters = dict[str, int]


@dataclass
class JobContext:
    """Everything a job may use. In a dry run `sink` writes nothing; reads go to the real servers."""

    settings: Settings
    pg: Postgres
    index: TypesenseIndex
    sink: Sink

    @property
    def dry_run(self) -> bool:
        return self.settings.dry_run


class Phase(ABC):
    name: ClassVar[str]


class Step(Phase):
    """Runs once; on a restart before its checkpoint was saved it runs again, so it must be idempotent."""

    @abstractmethod
    def run(self) -> Counters: ...


class KeysetPhase(Phase):
    """Walks a source in key order, one batch at a time."""

    batch_size: int = 1000

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

    @abstractmethod
    def process(self, rows: Sequence[Row]) -> Counters:
        """Write one batch; return counter increments. May be called again with the same rows."""

    def finish(self) -> None:
        """Called once after the last batch, before the next phase starts."""


class Job(ABC):
    name: ClassVar[str]
    #: The checkpoint document's `_id`.
    checkpoint_id: ClassVar[str]

    def __init__(self, ctx: JobContext):
        self.ctx = ctx

    @abstractmethod
    def phases(self) -> Sequence[Phase]: ...
