"""A thin Typesense adapter: schema, bulk import with per-document results, streamed export.

Import always answers HTTP 200 with one JSON result per line, so a failed document is only
visible by reading every line; `import_documents` reads them all and reports the failures by id.
Documents arrive already encoded (`EncodedDocuments`): a job may have Postgres render them, which
costs the worker no Python per document. The official client's `export` buffers the whole
collection in one string, so `export_documents` / `export_lines` stream it with one long-lived
httpx client (already the official client's transport) to keep memory flat on big indexes.
The client's own retries are switched off: retrying is the worker's decision (see worker.retry),
made with backoff and a stop check, never a blind resend of a large import.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import quote

import httpx
import typesense
from typesense import exceptions as ts_errors

#: Errors after which the same request may succeed later.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    httpx.TransportError,
    ts_errors.ServerError,
    ts_errors.ServiceUnavailable,
    ts_errors.HTTPStatus0Error,
    ts_errors.Timeout,
)

ObjectNotFound = ts_errors.ObjectNotFound
# One shared encoder: json.dumps with options builds a new encoder per call, which was a tenth
# of the worker's CPU per imported document.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_SUCCESS_LINE = '{"success":true}'
#: Documents per chunk of an export stream (the server's `batch_size`, in every version since
#: 0.24.0; older servers ignore it). The default of 100 makes an export latency-bound: 1M
#: documents took 12.3 s and 1.9-2.7 Typesense CPU s; in chunks of 5,000, 1.2 s and 1.0 CPU s.
EXPORT_BATCH_DOCUMENTS = 5000
Unauthorized = (ts_errors.RequestUnauthorized, ts_errors.RequestForbidden)


@dataclass(frozen=True)
class EncodedDocuments:
    """Documents ready to send: the import's body, one JSON object per line. A document's id is
    read from its own line, and only when the server refuses it (or for a dry run): no list of
    ids is built per batch, and a refused document is named by what was sent."""

    body: str
    count: int

    def __post_init__(self) -> None:
        # JSON never holds a raw newline, so each line is one document: a mismatch is a bug.
        lines = self.body.count("\n") + 1 if self.body else 0
        if lines != self.count:
            raise ValueError(f"an import body of {lines} lines said to hold {self.count} documents")

    @classmethod
    def from_lines(cls, lines: Sequence[str]) -> "EncodedDocuments":
        return cls("\n".join(lines), len(lines))

    @classmethod
    def from_dicts(cls, documents: Iterable[dict[str, Any]]) -> "EncodedDocuments":
        return cls.from_lines([_encode(d) for d in documents])

    def __len__(self) -> int:
        return self.count

    @property
    def lines(self) -> list[str]:
        return self.body.split("\n") if self.count else []

    @property
    def ids(self) -> list[str]:
        return [_document_id(line) for line in self.lines]


def _document_id(line: str) -> str:
    return str(json.loads(line)["id"])


@dataclass(frozen=True)
class ImportFailure:
    """One document an import refused: 404 for an update of a missing document, 400 for bad data."""

    id: str
    code: int | None
    error: str


@dataclass(frozen=True)
class ImportReport:
    """An import's answer, every line read: how many documents succeeded, and each one refused."""

    succeeded: int
    failed: list[ImportFailure]


class TypesenseIndex:
    """One collection on one Typesense server."""

    def __init__(
        self,
        host: str,
        port: int,
        protocol: str,
        api_key: str,
        collection: str,
        timeout_seconds: float = 120.0,
    ):
        self.collection = collection
        self._base_url = f"{protocol}://{host}:{port}"
        self._headers = {"X-TYPESENSE-API-KEY": api_key}
        self._timeout = timeout_seconds
        # One client for health, stats and exports: a new one per call would build a TLS context
        # and a connection each time.
        self._http = httpx.Client(base_url=self._base_url, headers=self._headers, timeout=timeout_seconds)
        # One import at a time: Typesense applies a collection's writes one batch after another
        # anyway, and a second concurrent import only costs it CPU parsing ahead (measured: see
        # bench/README.md). Other threads' Postgres writes still overlap the import.
        self._import_lock = threading.Lock()
        self._client = typesense.Client(
            {
                "nodes": [{"host": host, "port": port, "protocol": protocol}],
                "api_key": api_key,
                "connection_timeout_seconds": timeout_seconds,
                "num_retries": 0,
            }
        )

    @property
    def _documents(self) -> Any:
        return self._client.collections[self.collection].documents

    def health_report(self) -> dict[str, Any]:
        """`/health`: {"ok": true}, or {"ok": false, "resource_error": "OUT_OF_MEMORY"} and the like."""
        return self._http.get("/health").json()

    def stats(self) -> dict[str, Any]:
        """`/stats.json`: request rates, latencies and `pending_write_batches`."""
        response = self._http.get("/stats.json")
        response.raise_for_status()
        return response.json()

    def schema(self) -> dict[str, Any]:
        """The collection's schema; raises ObjectNotFound when it does not exist."""
        return self._client.collections[self.collection].retrieve()

    def add_fields(self, fields: list[dict[str, Any]]) -> None:
        self._client.collections[self.collection].update({"fields": fields})

    def import_documents(self, documents: EncodedDocuments, action: str) -> ImportReport:
        """Send one bulk import; read every result line."""
        if not documents:
            return ImportReport(0, [])
        with self._import_lock:
            answer = self._documents.import_(documents.body, {"action": action})
        lines = answer.split("\n")
        if lines and not lines[-1].strip():
            lines.pop()
        if len(lines) != len(documents):
            raise ts_errors.ServerError(
                f"import answered {len(lines)} result lines for {len(documents)} documents"
            )
        succeeded = answer.count(_SUCCESS_LINE)
        if succeeded == len(lines):
            return ImportReport(succeeded, [])
        failed = []
        for document, line in zip(documents.lines, lines):
            if line != _SUCCESS_LINE:
                result = json.loads(line)
                if result.get("success"):
                    continue
                failed.append(
                    ImportFailure(_document_id(document), result.get("code"), result.get("error") or "unknown error")
                )
        return ImportReport(len(lines) - len(failed), failed)

    def existing_ids(self, ids: list[str]) -> set[str]:
        """Which of `ids` the collection holds (read-only)."""
        return {d["id"] for d in self.export_by_ids(ids, "id")}

    def export_by_ids(self, ids: list[str], include_fields: str, chunk: int = 250) -> Iterator[dict[str, Any]]:
        """The documents with these ids that the collection holds (in no particular order), with
        `include_fields` only: a filtered export per chunk of ids, so each URL stays short. An id
        that a filter cannot quote (see `_filterable`) is fetched on its own by GET instead."""
        filterable = [i for i in ids if _filterable(i)]
        for start in range(0, len(filterable), chunk):
            quoted = ",".join(f"`{i}`" for i in filterable[start : start + chunk])
            yield from self.export_documents(include_fields, filter_by=f"id:[{quoted}]")
        wanted = [f for f in (f.strip() for f in include_fields.split(",")) if f] if include_fields else []
        for document_id in dict.fromkeys(i for i in ids if not _filterable(i)):
            document = self._get_document(document_id)
            if document is not None:
                # GET /documents/{id} ignores include_fields (0.24.1): project it here.
                yield {k: v for k, v in document.items() if k in wanted} if wanted else document

    def _get_document(self, document_id: str) -> dict[str, Any] | None:
        """One document by id, or None when the collection does not hold it."""
        response = self._http.get(f"{self._collection_path}/documents/{_path_segment(document_id)}")
        if response.status_code == 404:
            # The same status for a missing collection: tell the two apart.
            if self._http.get(self._collection_path).status_code == 404:
                raise ObjectNotFound(f"collection {self.collection!r} not found")
            return None
        _check_status(response, "document fetch")
        return response.json()

    @property
    def _collection_path(self) -> str:
        """The collection's URL path, its name percent-encoded: a collection name may hold any
        character (Typesense 0.24.1 accepts `/`, `?`, `#`, `%`, spaces, `.` and `..`)."""
        return f"/collections/{_path_segment(self.collection)}"

    def export_documents(
        self, include_fields: str | None = None, filter_by: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Stream the collection's documents, one dict at a time."""
        for line in self._export("iter_lines", include_fields, filter_by):
            if line.strip():
                yield json.loads(line)

    def export_lines(self, include_fields: str | None = None) -> Iterator[bytes]:
        """Stream the export's raw bytes: JSON lines, cut anywhere, for a consumer that parses
        them itself (such as Postgres in a COPY)."""
        return self._export("iter_bytes", include_fields, None)

    def _export(self, iterate: str, include_fields: str | None, filter_by: str | None) -> Iterator[Any]:
        params = {"batch_size": str(EXPORT_BATCH_DOCUMENTS)}
        if include_fields:
            params["include_fields"] = include_fields
        if filter_by:
            params["filter_by"] = filter_by
        with self._http.stream("GET", f"{self._collection_path}/documents/export", params=params) as response:
            if response.status_code == 404:
                raise ObjectNotFound(f"collection {self.collection!r} not found")
            _check_status(response, "export")
            yield from getattr(response, iterate)()

    def close(self) -> None:
        """Release pooled connections (the client has no public close on older versions)."""
        self._http.close()
        api_call = getattr(self._client, "api_call", None)
        if api_call is not None and hasattr(api_call, "close"):
            api_call.close()


def _filterable(document_id: str) -> bool:
    """Whether `id:[`...`]` finds this id on Typesense 0.24.1. It has no escape for a backtick:
    such an id finds nothing, and in `id:=` form it crashes the server (segfault in its filter
    parser). A backslash before the closing backtick escapes it (any backslash is sent the other
    way, to be safe), and spaces around the id are trimmed, so those find nothing either.
    Verified against the real server; tests/integration/test_typesense_ids.py."""
    return "`" not in document_id and "\\" not in document_id and document_id == document_id.strip()


def _path_segment(value: str) -> str:
    """`value` as one URL path segment: percent-encoded, `.` too, so that `.` or `..` are not
    taken for dot segments (httpx removes those)."""
    return quote(value, safe="").replace(".", "%2E")


def _check_status(response: httpx.Response, what: str) -> None:
    """Raise what the worker's retry policy understands for a refused or failed request."""
    if response.status_code in (401, 403):
        raise ts_errors.RequestUnauthorized(f"{what} refused: check TYPESENSE_API_KEY")
    if response.status_code >= 500:
        raise ts_errors.ServerError(f"{what} answered HTTP {response.status_code}")
    response.raise_for_status()
