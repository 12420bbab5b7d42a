"""Names and helpers shared by the harness and its contender subprocesses.

The contenders read their servers from the worker's own variables (DB_*, MONGO_URI,
MONGO_DB_NAME, TYPESENSE_*, PRODUCTS_TABLE), exactly as `python -m worker` does, and report
their own phase timings on stdout as one line ``BENCH_RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping

import psycopg

from worker.config import Settings, load_settings
from worker.jobs.inventory_fields import InventoryFieldsJob
from worker.jobs.inventory_fields.settings import InventorySettings

#: Tables / collection the benchmark drops and recreates (never the worker's defaults).
PRODUCTS_TABLE = "public.bench_products"
SCRATCH_TABLE = "public.bench_scratch"
COLLECTION = "bench_products"
RESULT_PREFIX = "BENCH_RESULT "
NEW_FIELDS = ("created_at", "deleted_at")
#: The export both contenders stream: the fields the job needs, in chunks of 5,000 documents as
#: the worker asks for them (utils.typesense.EXPORT_BATCH_DOCUMENTS), so no contender is slowed
#: by the server's default of 100 per chunk.
EXPORT_PARAMS = {"include_fields": ",".join(("id", *NEW_FIELDS)), "batch_size": "5000"}


def settings_from_env() -> Settings:
    """The worker's settings from os.environ only (no `.env` lookup, like the worker run here)."""
    return load_settings(dict(os.environ))


def inventory_settings(env: Mapping[str, str] | None = None) -> InventorySettings:
    """The inventory job's own settings (tables) from `env`, by default os.environ only."""
    return InventoryFieldsJob.read_settings(dict(os.environ) if env is None else env)


def pg_connect(settings: Settings, **kw: Any) -> psycopg.Connection:
    info = settings.pg_conninfo()
    if isinstance(info, str):
        return psycopg.connect(info, **kw)
    return psycopg.connect(**{**info, **kw})


def typesense_base(settings: Settings) -> str:
    return f"{settings.typesense_protocol}://{settings.typesense_host}:{settings.typesense_port}"


def typesense_headers(settings: Settings) -> dict[str, str]:
    return {"X-TYPESENSE-API-KEY": settings.typesense_api_key}


def count_import_result(counters: dict[str, int], result: dict[str, Any], updated: str) -> None:
    """Add one import result line to `counters`: `updated`, `missing_in_index` (404) or `failures`."""
    if result.get("success"):
        counters[updated] += 1
    elif result.get("code") == 404:
        counters["missing_in_index"] += 1
    else:
        counters["failures"] += 1


def emit_result(result: dict[str, Any]) -> None:
    """The contender's own measurements, for the harness to parse."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def parse_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None
