"""The ensure_schema step: `created_at` / `deleted_at` (int64, optional) added to the collection
if missing."""

from __future__ import annotations

import threading
from typing import Any

from utils.typesense import ObjectNotFound
from worker.exceptions import SchemaMismatch
from worker.job import Counters, JobContext, Step
from worker.jobs.inventory_fields.products_table import NEW_FIELDS


class EnsureSchema(Step):
    """Typesense holds an export back until a schema change has finished (about 2 s per million
    documents), while a change sent once an export is streaming runs alongside it. So, given the
    index_only phase's `export_started`, the change waits (up to `export_wait_seconds`) for that
    early export to stream first: it then reads the index while the schema changes, instead of
    after, when it would compete with the products phase for the servers' CPU."""

    name = "ensure_schema"
    export_wait_seconds = 10.0

    def __init__(self, ctx: JobContext, export_started: threading.Event | None = None):
        self.ctx, self.export_started = ctx, export_started

    def missing_fields(self) -> list[dict[str, Any]]:
        try:
            fields = {f["name"]: f for f in self.ctx.index.schema()["fields"]}
        except ObjectNotFound:
            raise SchemaMismatch(
                f"Typesense collection {self.ctx.index.collection!r} does not exist (TYPESENSE_COLLECTION)"
            ) from None
        missing = []
        for name in NEW_FIELDS:
            if name not in fields:
                missing.append({"name": name, "type": "int64", "optional": True})
            elif fields[name]["type"] != "int64":
                raise SchemaMismatch(
                    f"collection {self.ctx.index.collection!r} field {name} is {fields[name]['type']}, expected int64"
                )
        return missing

    def tally(self) -> Counters:
        return {"index_fields_added": len(self.missing_fields())}

    def run(self) -> Counters:
        missing = self.missing_fields()
        if missing:
            self._let_the_export_start()
            self.ctx.sink.add_index_fields(missing)
        return {}

    def _let_the_export_start(self) -> None:
        if self.export_started is not None:
            # A stop ends the early prepare, which sets the event: no wait outlasts a stop.
            self.export_started.wait(self.export_wait_seconds)
            self.ctx.stop.sleep(0)
