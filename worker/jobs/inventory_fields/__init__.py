"""Inventory fields backfill (seed 004): `deleted_at` and `created_at` in Postgres and Typesense.

After it, `deleted_at` is 0 (active) or a deletion timestamp everywhere, never NULL, so
`deleted_at < 1` is the one filter in both stores; every index document has `created_at`
(unix seconds from Postgres, or 0 for documents with no product row).

Phases:
1. `ensure_schema` (schema.py) - add `created_at` / `deleted_at` (int64) to the collection.
2. `products` (products.py) - per batch: `deleted_at = 0` where NULL, then partial index updates.
3. `index_only` (index_only.py) - documents with no product row get the fields they lack, as 0.
4. `reconcile` (reconcile.py) - the stores compared and every difference the application's own
   writes left behind repaired, with Postgres as the truth; skipped when RECONCILE_MAX_PASSES=0.
"""

from __future__ import annotations

import threading
from typing import Sequence

from worker.job import Differences, Job, Phase
from worker.jobs.inventory_fields.index_only import DefaultIndexOnly
from worker.jobs.inventory_fields.products import BackfillProducts, ProductsBatch
from worker.jobs.inventory_fields.products_table import ProductsTable
from worker.jobs.inventory_fields.reconcile import Reconcile
from worker.jobs.inventory_fields.schema import EnsureSchema
from worker.jobs.inventory_fields.settings import InventorySettings

__all__ = ["BackfillProducts", "DefaultIndexOnly", "EnsureSchema", "InventoryFieldsJob", "ProductsBatch", "Reconcile"]


class InventoryFieldsJob(Job):
    name = "inventory_fields"
    checkpoint_id = "backfill_inventory_fields"
    stores = frozenset({"typesense"})
    settings_class = InventorySettings

    def phases(self) -> Sequence[Phase]:
        products = ProductsTable(self.ctx)
        export_started = threading.Event()
        phases: list[Phase] = [
            EnsureSchema(self.ctx, export_started),
            BackfillProducts(self.ctx, products),
            DefaultIndexOnly(self.ctx, products, export_started),
        ]
        if self.ctx.job_settings.reconcile_max_passes > 0:
            phases.append(Reconcile(self.ctx, products, self.name))
        return phases

    def check(self) -> None:
        ProductsTable(self.ctx).check()
        EnsureSchema(self.ctx).missing_fields()

    def verify(self) -> Differences:
        return Reconcile(self.ctx, ProductsTable(self.ctx), self.name, skip_recorded_failures=False).compare()
