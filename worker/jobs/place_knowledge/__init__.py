"""Place knowledge import (seed 000): facts about POIs and areas, idempotent, told apart.

`python -m worker run --job place_knowledge --source PATH [--force] [--dry-run]`. PATH is a
JSON Lines file of facts or a directory of research `*.json` files (`manifest.json` skipped).

Phases:
1. `stage` (step): the source staged into Postgres by the engine's file source (COPY, one
   transaction per file, a ledger; resumable mid-file), then indexed by parent.
2. `add_content_hash` (step), `hash_existing`, `unique_content_hash` (step): the preflight of
   hashes.py: the column, its value for the facts already there (rows repeating another are
   counted and listed, never deleted), then a unique index built concurrently.
3. `rejects`, `poi_facts`, `area_facts` (facts.py): the facts written, per batch of whole
   parents, with exact counters; with `--force`, a scoped replace per parent.

The source and `--force` name the run: another file is another run, the same file resumes, and a
second run of a completed source finds it completed (a reset and a new run insert 0).
"""

from __future__ import annotations

from typing import Sequence

from worker.config import TableName
from worker.file_source import FileSource, JsonLines, ResearchJson
from worker.job import BatchResult, Job, JobContext, Phase, Step
from worker.jobs.place_knowledge.facts import ParentFacts, Rejects
from worker.jobs.place_knowledge.hashes import AddHashColumn, HashExisting, UniqueHashIndex
from worker.jobs.place_knowledge.settings import PlaceKnowledgeSettings
from worker.jobs.place_knowledge.table import STAGED_TYPES, FactsTable


def file_source(ctx: JobContext, tag: str) -> FileSource:
    """The run's source: a JSON Lines file, or a directory of research JSON files."""
    settings: PlaceKnowledgeSettings = ctx.job_settings
    prefix = settings.staging
    assert settings.source is not None  # required
    return FileSource(
        ctx, settings.source, ResearchJson() if settings.source.is_dir() else JsonLines(),
        staging=TableName(prefix.schema, f"{prefix.name}_rows_{tag}"),
        ledger=TableName(prefix.schema, f"{prefix.name}_files_{tag}"),
        columns=STAGED_TYPES,
    )


class Stage(Step):
    name = "stage"

    def __init__(self, source: FileSource):
        self.source = source

    def run(self) -> BatchResult:
        report = self.source.stage()
        self.source.index_by("poi_id", "area_id")  # the grouped walks of poi_facts and area_facts
        return report.result()


class PlaceKnowledgeJob(Job):
    name = "place_knowledge"
    checkpoint_id = "place_knowledge"
    settings_class = PlaceKnowledgeSettings

    def phases(self) -> Sequence[Phase]:
        settings: PlaceKnowledgeSettings = self.ctx.job_settings
        source = file_source(self.ctx, self.run.tag)
        table = FactsTable(self.ctx, settings.table)
        return (
            Stage(source),
            AddHashColumn(self.ctx, table),
            HashExisting(self.ctx, table),
            UniqueHashIndex(self.ctx, table),
            Rejects(self.ctx, source),
            ParentFacts(self.ctx, source, table, "poi_id", settings.force),
            ParentFacts(self.ctx, source, table, "area_id", settings.force),
        )

    def check(self) -> None:
        file_source(self.ctx, self.run.tag).files()  # the source is there and readable
        FactsTable(self.ctx, self.ctx.job_settings.table).describe()
