"""`TypesenseIndex.export_by_ids` and the export against the real server (0.24.1): any id a
document may have is found, whatever the filter syntax makes of it, and a collection whose name
needs escaping in a URL path is exported, not mistaken for another path."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import httpx
import pytest

from utils.typesense import ObjectNotFound, TypesenseIndex

#: Ids Typesense accepts that a `filter_by` cannot quote (backticks, a trailing backslash,
#: spaces around the id), ids around them that it can, and ids that are URL dot segments.
ODD_IDS = [
    "a`b", "`", "``", "a`", "`a", "a`,`b", "x`]", "q` || id:*",
    "a\\", "\\", "a\\b", " lead", "trail ", " ",
    ".", "..", "a.b", "a/b", "a?b", "a#b", "a%b", "a+b", "a&b", "a,b", "a]b", "[x", "a:b", "a b",
    "(p)", "a'b", 'a"b', "é", "007", "7",
]
#: A collection name that is a different path, query or fragment when put in a URL as it is.
ODD_COLLECTION = "odd `name/with ?query#frag %25 & + ."


def _client(services) -> httpx.Client:
    ts = services.typesense
    return httpx.Client(base_url=ts.url, headers={"X-TYPESENSE-API-KEY": ts.api_key}, timeout=30)


@pytest.fixture
def odd_collection(services):
    """A collection with an odd name holding one document per odd id, plus plain ones; made
    through raw HTTP with the name percent-encoded (the official client does not encode it)."""
    name = f"{ODD_COLLECTION} {uuid.uuid4().hex[:8]}"
    path = "/collections/" + quote(name, safe="").replace(".", "%2E")
    with _client(services) as client:
        created = client.post("/collections", json={"name": name, "fields": [{"name": "name", "type": "string"}]})
        assert created.status_code == 201, created.text
        documents = [{"id": i, "name": f"n{k}", "created_at": k, "deleted_at": 0} for k, i in enumerate(ODD_IDS)]
        documents += [{"id": f"plain-{k}", "name": "plain", "created_at": 1000 + k, "deleted_at": 5} for k in range(300)]
        imported = client.post(
            f"{path}/documents/import", params={"action": "create"},
            content="\n".join(json.dumps(d) for d in documents),
        )
        assert imported.status_code == 200 and imported.text.count('"success":true') == len(documents), imported.text
        yield name, {d["id"]: d for d in documents}
        client.delete(path)


def _index(services, collection: str) -> TypesenseIndex:
    ts = services.typesense
    return TypesenseIndex(ts.host, int(ts.port), ts.protocol, ts.api_key, collection)


def test_export_by_ids_finds_every_id_and_only_those_asked_for(services, odd_collection):
    name, documents = odd_collection
    index = _index(services, name)
    try:
        asked = ODD_IDS + [f"plain-{k}" for k in range(0, 300, 2)] + ["missing`id", "missing", " missing ", "a`b"]
        found = list(index.export_by_ids(asked, "id,created_at,deleted_at", chunk=40))

        by_id = {d["id"]: d for d in found}
        assert len(found) == len(by_id), "each document once, even when its id is asked for twice"
        expected = {i: {k: documents[i][k] for k in ("id", "created_at", "deleted_at")} for i in asked if i in documents}
        assert sorted(by_id) == sorted(expected), f"missing: {sorted(set(expected) - set(by_id))}"
        assert by_id == expected, "only the fields asked for"
        assert index.existing_ids(["a`b", "nope`", "plain-3", "..", "nope"]) == {"a`b", "plain-3", ".."}
        assert index.health_report()["ok"] is True, "no request took the server down"
    finally:
        index.close()


def test_a_collection_whose_name_needs_escaping_is_exported(services, odd_collection):
    name, documents = odd_collection
    index = _index(services, name)
    try:
        assert {d["id"] for d in index.export_documents("id")} == set(documents)
        streamed = b"".join(index.export_lines("id")).decode()
        assert {json.loads(line)["id"] for line in streamed.splitlines() if line.strip()} == set(documents)
    finally:
        index.close()


def test_a_missing_collection_is_reported_as_missing_on_either_path(services):
    index = _index(services, f"no such/collection {uuid.uuid4().hex[:8]}")
    try:
        with pytest.raises(ObjectNotFound):
            list(index.export_by_ids(["plain"], "id"))
        with pytest.raises(ObjectNotFound):
            list(index.export_by_ids(["a`b"], "id"))
    finally:
        index.close()
