"""The inventory job's own settings: seed 004's variable names, unchanged."""

from __future__ import annotations

from dataclasses import dataclass

from worker.config import TableName
from worker.job_settings import setting


@dataclass(frozen=True)
class InventorySettings:
    products_table: TableName = setting(
        "PRODUCTS_TABLE", TableName("public", "products"), "Products table, schema.table (a bare name means public.<name>)."
    )
    scratch_table: TableName = setting(
        "SCRATCH_TABLE",
        TableName("public", "backfill_index_ids"),
        "Table the index_only and reconcile phases fill with the index's ids (dropped when each ends;"
        " a dry run and `verify` use a temporary table of that name instead).",
    )
    typesense_page_size: int = setting(
        "TYPESENSE_PAGE_SIZE", 250, "Documents per batch in the index_only phase.", minimum=1, maximum=100_000
    )
    reconcile_max_passes: int = setting(
        "RECONCILE_MAX_PASSES",
        3,
        "The reconcile phase compares the index with Postgres after the other phases and repairs what the"
        " application's own writes left different; it walks again while a walk repaired anything, at most"
        " this many times. 0 turns the phase off.",
        minimum=0,
        maximum=100,
    )
