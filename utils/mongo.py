"""MongoDB client with short server-selection timeouts.

pymongo's default 30 s server selection would make every checkpoint save during an outage hang
for half a minute before our retry policy even sees the error; a few seconds lets the policy
(backoff, stop checks) decide instead.
"""

from __future__ import annotations

import pymongo
from pymongo.database import Database


def connect(uri: str, db_name: str, timeout_ms: int = 5000) -> tuple[pymongo.MongoClient, Database]:
    client: pymongo.MongoClient = pymongo.MongoClient(
        uri,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms, 30_000),
        tz_aware=True,
        appname="backfill-worker",
    )
    return client, client[db_name]
