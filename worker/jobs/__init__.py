"""The registry of jobs `python -m worker run --job NAME` can run."""

from __future__ import annotations

from worker.exceptions import UnknownJob
from worker.job import Job
from worker.jobs.codes_import import CodesImportJob
from worker.jobs.embeddings import EmbeddingsJob
from worker.jobs.inventory_fields import InventoryFieldsJob
from worker.jobs.metrics_migration import MetricsMigrationJob
from worker.jobs.place_knowledge import PlaceKnowledgeJob
from worker.jobs.tally import TallyJob

JOBS: dict[str, type[Job]] = {
    job.name: job for job in (InventoryFieldsJob, MetricsMigrationJob, PlaceKnowledgeJob, CodesImportJob, EmbeddingsJob, TallyJob)
}


def job_class(name: str) -> type[Job]:
    try:
        return JOBS[name]
    except KeyError:
        raise UnknownJob(name, sorted(JOBS)) from None
