"""Builds the clients a run needs from Settings, and closes them.

Every client connects lazily, so building them is free and a configuration error still surfaces
before any connection is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pymongo

from utils import mongo
from utils.pg import Postgres
from utils.typesense import TypesenseIndex
from worker.checkpoint import MongoCheckpointStore
from worker.config import Settings
from worker.failures import FailureStore, MemoryFailureStore, MongoFailureStore
from worker.job import JobContext
from worker.job_settings import Run
from worker.lease import check_lease
from worker.retry import RetryPolicy
from worker.sinks import DryRunSink, LiveSink, Sink
from worker.stop import StopFlag
from worker.throttle import Indicator, PostgresActivity, Throttler, TypesenseHealth


@dataclass
class Resources:
    settings: Settings
    pg: Postgres
    #: Built only for a run whose job uses Typesense (`stores`).
    index: TypesenseIndex | None
    mongo_client: pymongo.MongoClient
    checkpoints: MongoCheckpointStore
    failures: MongoFailureStore

    @classmethod
    def open(cls, settings: Settings, stores: frozenset[str] = frozenset()) -> "Resources":
        """The clients of Postgres and MongoDB, and of each store in `stores`."""
        client, db = mongo.connect(settings.mongo_uri, settings.mongo_db_name)
        return cls(
            settings=settings,
            # A dry run keeps its scratch table in a temporary table: one session for all threads.
            pg=Postgres(settings.pg_conninfo(), per_thread=not settings.dry_run),
            index=TypesenseIndex(
                settings.typesense_host,
                settings.typesense_port,
                settings.typesense_protocol,
                settings.typesense_api_key,
                settings.typesense_collection,
                settings.typesense_timeout_seconds,
            )
            if "typesense" in stores
            else None,
            mongo_client=client,
            checkpoints=MongoCheckpointStore(db[settings.mongo_checkpoint_collection]),
            failures=MongoFailureStore(db[settings.mongo_failures_collection]),
        )

    def sink(self, stop: StopFlag) -> Sink:
        if self.settings.dry_run:
            return DryRunSink(self.pg, self.index, calls=self.settings.dry_run_calls)
        return LiveSink(self.pg, self.index, before_write=lambda: check_lease(stop))

    def throttler(self, stop: StopFlag, job_indicators: Sequence[Indicator] = ()) -> Throttler:
        """Pauses while Postgres, Typesense (for a job that uses it) or a service of the job's
        own (`job_indicators`) is busy."""
        s = self.settings
        indicators: list[Indicator] = [
            PostgresActivity(self.pg, s.throttle_pg_max_active, s.throttle_pg_max_replication_lag_seconds),
            *job_indicators,
        ]
        if self.index is not None:
            indicators.append(TypesenseHealth(self.index, s.throttle_ts_max_pending_writes))
        return Throttler(indicators, stop, s.throttle_check_seconds)

    def failure_store(self) -> FailureStore:
        return MemoryFailureStore() if self.settings.dry_run else self.failures

    def job_context(self, stop: StopFlag, job_settings: Any = None, run: Run | None = None, retry: RetryPolicy | None = None) -> JobContext:
        """What a job is given: the clients, its sink, its own settings and run, and retries."""
        policy = retry or RetryPolicy(self.settings.retry_timeout_seconds, self.settings.retry_max_wait_seconds)
        return JobContext(
            settings=self.settings, pg=self.pg, index=self.index, sink=self.sink(stop), failures=self.failures, stop=stop,
            job_settings=job_settings, run=run, retry=lambda fn, what: policy.call(fn, what=what, stop=stop),
        )

    def close(self) -> None:
        self.pg.close()
        if self.index is not None:
            self.index.close()
        self.mongo_client.close()

    def __enter__(self) -> "Resources":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
