"""A thin Typesense adapter: schema, bulk import with per-document results, streamed export.

Import always answers HTTP 200 with one JSON result per line, so a failed document is only
visible by reading every line; `import_documents` returns them all. The official client's
`export` buffers the whole collection in one string, so `export_documents` streams it with
httpx (already the client's transport) to keep memory flat on multi-million-document indexes.
The client's own retries are switched off: retrying is the worker's decision (see worker.retry),
made with backoff and a stop check, never a blind resend of a large import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

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
Unauthorized = (ts_errors.RequestUnauthorized, ts_errors.RequestForbidden)


@dataclass(frozen=True)
class ImportResult:
    """One line of an import answer."""

    id: str
    success: bool
    code: int | None = None
    error: str | None = None


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
        return httpx.get(f"{self._base_url}/health", timeout=self._timeout).json()

    def stats(self) -> dict[str, Any]:
        """`/stats.json`: request rates, latencies and `pending_write_batches`."""
        response = httpx.get(f"{self._base_url}/stats.json", headers=self._headers, timeout=self._timeout)
        response.raise_for_status()
        return response.json()

    def schema(self) -> dict[str, Any]:
        """The collection's schema; raises ObjectNotFound when it does not exist."""
        return self._client.collections[self.collection].retrieve()

    def add_fields(self, fields: list[dict[str, Any]]) -> None:
        self._client.collections[self.collection].update({"fields": fields})

    def import_documents(self, documents: Iterable[dict[str, Any]], action: str) -> list[ImportResult]:
        """Send one bulk import and return one result per document, in order."""
        docs = list(documents)
        if not docs:
            return []
        body = "\n".join(map(_encode, docs))
        answer = self._documents.import_(body, {"action": action})
        lines = [line for line in answer.split("\n") if line.strip()]
        if len(lines) != len(docs):
            raise ts_errors.ServerError(
                f"import answered {len(lines)} result lines for {len(docs)} documents"
            )
        return [
            ImportResult(str(doc["id"]), True) if line == _SUCCESS_LINE else _result(doc, json.loads(line))
            for doc, line in zip(docs, lines)
        ]

    def existing_ids(self, ids: list[str]) -> set[str]:
        """Which of `ids` the collection holds (read-only)."""
        return {d["id"] for d in self.export_by_ids(ids, "id")}

    def export_by_ids(self, ids: list[str], include_fields: str, chunk: int = 250) -> Iterator[dict[str, Any]]:
        """The documents with these ids, a chunk per request so each URL stays short."""
        for start in range(0, len(ids), chunk):
            quoted = ",".join(f"`{i}`" for i in ids[start : start + chunk])
            yield from self.export_documents(include_fields, filter_by=f"id:[{quoted}]")

    def export_documents(
        self, include_fields: str | None = None, filter_by: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Stream the collection's documents, one dict at a time."""
        params = {"include_fields": include_fields} if include_fields else {}
        if filter_by:
            params["filter_by"] = filter_by
        url = f"{self._base_url}/collections/{self.collection}/documents/export"
        with httpx.stream("GET", url, params=params, headers=self._headers, timeout=self._timeout) as response:
            if response.status_code == 404:
                raise ObjectNotFound(f"collection {self.collection!r} not found")
            if response.status_code in (401, 403):
                raise ts_errors.RequestUnauthorized("export refused: check TYPESENSE_API_KEY")
            if response.status_code >= 500:
                raise ts_errors.ServerError(f"export answered HTTP {response.status_code}")
            response.raise_for_status()
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def close(self) -> None:
        """Release pooled connections (the client has no public close on older versions)."""
        api_call = getattr(self._client, "api_call", None)
        if api_call is not None and hasattr(api_call, "close"):
            api_call.close()


def _result(doc: dict[str, Any], answer: dict[str, Any]) -> ImportResult:
    return ImportResult(
        id=str(doc.get("id")),
        success=bool(answer.get("success")),
        code=answer.get("code"),
        error=answer.get("error"),
    )
