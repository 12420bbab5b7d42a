"""A simulated application that keeps writing while a backfill runs, as production does: it
deletes, restores and inserts products, each in Postgres and then in the index, like an app
that writes its database first and its search index after.

It writes until the job leaves its products phase (it reads the checkpoint): what it wrote is
then there for the reconcile phase to find, which the test can tell apart from writes that
landed after the job's last look.

It is the application of before the backfill: it inserts rows with NULL `deleted_at` and
documents without `created_at` / `deleted_at`, and some of its inserts land at keys the worker's
cursor has already passed. Deletes write a timestamp to both stores; restores write 0.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

from psycopg import sql

from tests.integration.inventory_data import checkpoint, index_for, pg_connect, table_parts
from utils.typesense import EncodedDocuments


class LiveApp(threading.Thread):
    def __init__(self, env: dict[str, str], keys: list[int], rate: float, seed: int):
        """`keys`: the products at the start (even numbers; the app inserts odd ones)."""
        super().__init__(name="live-app", daemon=True)
        self.env, self.keys, self.rate = env, list(keys), rate
        self.rng = random.Random(seed)
        self.table = sql.Identifier(*table_parts(env))
        self.halt = threading.Event()
        self.ops: Counter[str] = Counter()
        self.inserted: list[int] = []
        self.behind_cursor = 0
        self.error: BaseException | None = None
        self.seconds = 0.0  # how long it wrote
        self.top = 2 * len(keys)
        self._free_odd = set(range(1, self.top, 2))
        self._cursor = 0
        self._cursor_read = 0.0

    @property
    def writes(self) -> int:
        """Writes to either store: every operation writes Postgres, then the index."""
        return 2 * sum(self.ops.values())

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)
        if self.error is not None:
            raise AssertionError(f"the simulated application failed: {self.error!r}") from self.error

    def run(self) -> None:
        try:
            with pg_connect(self.env) as conn:
                index = index_for(self.env)
                try:
                    self._loop(conn, index)
                finally:
                    index.close()
        except BaseException as error:  # reported by stop()
            self.error = error

    def _loop(self, conn: Any, index: Any) -> None:
        interval = 1.0 / self.rate
        started = next_at = time.monotonic()
        while not self.halt.is_set():
            self.seconds = time.monotonic() - started
            if self._products_cursor() >= self.top:
                return
            op = self.rng.choices(("delete", "restore", "insert"), weights=(4, 3, 3))[0]
            getattr(self, f"_app_{op}")(conn, index)
            self.ops[op] += 1
            next_at += interval
            self.halt.wait(max(0.0, next_at - time.monotonic()))

    def _app_delete(self, conn: Any, index: Any) -> None:
        key, at = self.rng.choice(self.keys), int(time.time())
        conn.execute(sql.SQL("UPDATE {} SET deleted_at = %s WHERE id = %s").format(self.table), (at, key))
        index.import_documents(EncodedDocuments.from_dicts([{"id": str(key), "deleted_at": at}]), "update")

    def _app_restore(self, conn: Any, index: Any) -> None:
        key = self.rng.choice(self.keys)
        conn.execute(sql.SQL("UPDATE {} SET deleted_at = 0 WHERE id = %s").format(self.table), (key,))
        index.import_documents(EncodedDocuments.from_dicts([{"id": str(key), "deleted_at": 0}]), "update")

    def _app_insert(self, conn: Any, index: Any) -> None:
        cursor = self._products_cursor()
        behind = self.rng.random() < 0.5 and cursor > 1
        candidates = range(1, cursor, 2) if behind else range(cursor | 1, self.top, 2)
        key = self._free_key(candidates)
        if key is None:
            return
        conn.execute(
            sql.SQL("INSERT INTO {} (id, name, created_at, deleted_at) VALUES (%s, %s, now(), NULL)").format(self.table),
            (key, f"new product {key}"),
        )
        report = index.import_documents(EncodedDocuments.from_dicts([{"id": str(key), "name": f"new product {key}"}]), "create")
        assert not report.failed, report.failed
        self.inserted.append(key)
        self.keys.append(key)
        self.behind_cursor += behind

    def _free_key(self, candidates: range) -> int | None:
        for _ in range(20):
            if not candidates:
                return None
            key = self.rng.choice(candidates)
            if key in self._free_odd:
                self._free_odd.discard(key)
                return key
        return None

    def _products_cursor(self) -> int:
        """Where the products phase's cursor is (read from the checkpoint now and then)."""
        if time.monotonic() - self._cursor_read > 0.1:
            self._cursor_read = time.monotonic()
            cp = checkpoint(self.env) or {}
            if cp.get("phase") == "products" and cp.get("last_id") is not None:
                self._cursor = int(cp["last_id"])
            elif cp.get("phase") not in (None, "ensure_schema", "products"):
                self._cursor = self.top
        return self._cursor
