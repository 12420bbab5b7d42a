"""Embeddings backfill (seed 003): every active job posting gets an embedding from an
OpenAI-compatible provider, written with UPDATE only; then the queue is made to tell the truth.

`python -m worker run --job embeddings [--dry-run]`; `python -m worker status --job embeddings`
shows coverage (active jobs with an embedding).

Phases:
1. `embed` (embed.py): a keyset over `jobs WHERE is_active AND embedding IS NULL`, the texts
   cut by tokens and sent in requests of EMBEDDING_BATCH_SIZE, EMBEDDING_CONCURRENCY in flight;
   every answer checked (provider.py); a poison text isolated and recorded; one UPDATE per batch.
2. `reconcile_queue` (queue.py): every active job's queue row agrees with the table.

Preflight (`check`): the tables and columns, the embedding column's dimension (exit 5), the
tokenizer (EMBEDDING_TOKENIZER's, else the provider's, else none: inputs cut by characters; the
rule in force is logged), and one request to the provider for its credentials (exit 6) and its
dimension (skipped by a dry run, which calls no provider).
"""

from __future__ import annotations

from functools import cached_property, partial
from typing import Any, Sequence

import structlog

from worker.exceptions import ConfigError
from worker.job import Job, Phase
from worker.jobs.embeddings.embed import Embed
from worker.jobs.embeddings.provider import SERVICE, Inputs, Provider
from worker.jobs.embeddings.queue import ReconcileQueue
from worker.jobs.embeddings.settings import EmbeddingsSettings
from worker.jobs.embeddings.tables import EmbeddingColumn, Tables

log = structlog.get_logger("worker.jobs.embeddings")


class EmbeddingsJob(Job):
    name = "embeddings"
    checkpoint_id = "embeddings"
    settings_class = EmbeddingsSettings

    @cached_property
    def settings(self) -> EmbeddingsSettings:
        return self.ctx.job_settings

    @cached_property
    def tables(self) -> Tables:
        return Tables(self.ctx)

    @cached_property
    def provider(self) -> Provider:
        s = self.settings
        assert s.url is not None  # required
        return Provider(s.url, s.model, s.dimensions, s.api_key, s.timeout_seconds)

    @cached_property
    def inputs(self) -> Inputs:
        """Cut by EMBEDDING_TOKENIZER's tokenizer when given (unusable: exit 2), else by the
        provider's when it serves one, else by characters: a provider such as OpenAI serves no
        tokenizer, and the job must run against it all the same."""
        s = self.settings
        assert s.url is not None  # required
        load = partial(Inputs.load, s.tokenizer) if s.tokenizer else partial(Inputs.served_by, s.url)
        return self.ctx.retry(lambda: load(s.max_tokens, s.timeout_seconds), f"{SERVICE}: tokenizer")

    @cached_property
    def column(self) -> EmbeddingColumn:
        return self.tables.embedding_column()

    def phases(self) -> Sequence[Phase]:
        embed = Embed(self.ctx, self.tables, self.provider, lambda: self.inputs, lambda: self.column)
        return (embed, ReconcileQueue(self.ctx, self.tables, embed.name))

    def check(self) -> None:
        """The tables, columns and the column's dimension (exit 5), the tokenizer (an unusable
        EMBEDDING_TOKENIZER: exit 2; the rule in force logged), then one request: the provider
        takes the key (exit 6) and gives EMBEDDING_DIMENSIONS (exit 2)."""
        # Loaded now, and kept for the phases: a wrong column or an unusable tokenizer fails here.
        self.column
        log.info("embedding inputs", tokenizer=self.inputs.rule)
        given = self.ctx.retry(lambda: self.ctx.sink.call(SERVICE, self.provider.probe), f"{SERVICE}: preflight")
        if given is not None and given != self.settings.dimensions:
            raise ConfigError("EMBEDDING_DIMENSIONS", f"is {self.settings.dimensions}, but the provider's model {self.settings.model!r} gives {given}")

    def status(self) -> dict[str, Any]:
        return self.tables.coverage()
