"""Builds the clients a run needs from Settings, and closes them.

Every client connects lazily, so building them is free and a configuration error still surfaces
before any connection is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import pymongo

from utils import mongo
from utils.pg import Postgres
from utils.typesense import TypesenseIndex
from worker.checkpoint import MongoCheckpointStore
from worker.config import Settings
from worker.failures import FailureStore, MemoryFailureStore, MongoFailureStore
from worker.job import JobContext
from worker.sinks import DryRunSink, LiveSink, Sink


@dataclass
class Resources:
    settings: Settings
    pg: Postgres
    index: TypesenseIndex
    mongo_client: pymongo.MongoClient
    checkpoints: MongoCheckpointStore
    failures: MongoFailureStore

    @classmethod
    def open(cls, settings: Settings) -> "Resources":
        client, db = mongo.connect(settings.mongo_uri, settings.mongo_db_name)
        return cls(
            settings=settings,
            pg=Postgres(settings.pg_conninfo()),
            index=TypesenseIndex(
                settings.typesense_host,
                settings.typesense_port,
                settings.typesense_protocol,
                settings.typesense_api_key,
                settings.typesense_collection,
                settings.typesense_timeout_seconds,
            ),
            mongo_client=client,
            checkpoints=MongoCheckpointStore(db[settings.mongo_checkpoint_collection]),
            failures=MongoFailureStore(db[settings.mongo_failures_collection]),
        )

    def sink(self) -> Sink:
        if self.settings.dry_run:
            return DryRunSink(self.index)
        return LiveSink(self.pg, self.index)

    def failure_store(self) -> FailureStore:
        return MemoryFailureStore() if self.settings.dry_run else self.failures

    def job_context(self) -> JobContext:
        return JobContext(settings=self.settings, pg=self.pg, index=self.index, sink=self.sink())

    def close(self) -> None:
        self.pg.close()
        self.index.close()
        self.mongo_client.close()

    def __enter__(self) -> "Resources":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
