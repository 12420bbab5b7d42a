"""The registry of jobs `python -m worker run --job NAME` can run.

A job's modules are imported only when that job is asked for: they bring their own clients
and data, and the worker's start (and a stop that lands in it) should not wait for every job's.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from worker.exceptions import UnknownJob

if TYPE_CHECKING:
    from worker.job import Job

#: Each job's class, by name, as "module:Class".
JOBS: dict[str, str] = {
    "inventory_fields": "worker.jobs.inventory_fields:InventoryFieldsJob",
    "metrics_migration": "worker.jobs.metrics_migration:MetricsMigrationJob",
    "place_knowledge": "worker.jobs.place_knowledge:PlaceKnowledgeJob",
    "codes_import": "worker.jobs.codes_import:CodesImportJob",
    "embeddings": "worker.jobs.embeddings:EmbeddingsJob",
    "tally": "worker.jobs.tally:TallyJob",
}


def job_class(name: str) -> type[Job]:
    try:
        module, _, attribute = JOBS[name].partition(":")
    except KeyError:
        raise UnknownJob(name, sorted(JOBS)) from None
    return getattr(import_module(module), attribute)
