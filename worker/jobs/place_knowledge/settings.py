"""The place_knowledge job's settings: the source and `--force` name the run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from worker.config import TableName
from worker.job_settings import setting


@dataclass(frozen=True)
class PlaceKnowledgeSettings:
    source: Path | None = setting(
        "PLACE_KNOWLEDGE_SOURCE", None,
        "A JSON Lines file of facts, or a directory of research *.json files ({\"poi_id\": ..., \"facts\": [...]}).",
        flag="--source", identity=True, required=True,
    )
    force: bool = setting(
        "PLACE_KNOWLEDGE_FORCE", False,
        "Replace each POI's and area's facts with the source's: facts of a parent in the source that the source"
        " no longer has are deleted, in the transaction that inserts the new ones; parents not in the source are untouched.",
        flag="--force", identity=True,
    )
    table: TableName = setting("PLACE_KNOWLEDGE_TABLE", TableName("public", "place_knowledge"), "The facts table.")
    staging: TableName = setting(
        "PLACE_KNOWLEDGE_STAGING", TableName("public", "place_knowledge_import"),
        "Schema and name prefix of the job's own tables: per run <prefix>_rows_<run> (the staged facts) and"
        " <prefix>_files_<run> (the file ledger).",
    )
