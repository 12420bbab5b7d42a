import uuid

import pytest

from utils.keyset import KeyKind


@pytest.mark.parametrize(
    "kind, key",
    [(KeyKind.INTEGER, 42), (KeyKind.UUID, uuid.UUID(int=7)), (KeyKind.TEXT, "sku-9")],
)
def test_keys_survive_a_checkpoint_round_trip(kind, key):
    assert kind.decode(kind.encode(key)) == key
    assert kind.decode(kind.encode(None)) is None


def test_document_ids_map_to_keys_only_when_a_row_could_have_them():
    assert KeyKind.INTEGER.parse_document_id("12") == 12
    assert KeyKind.INTEGER.parse_document_id("orphan-1") is None
    assert KeyKind.INTEGER.parse_document_id(str(2**63)) is None
    assert KeyKind.UUID.parse_document_id("not-a-uuid") is None
    u = uuid.uuid4()
    assert KeyKind.UUID.parse_document_id(str(u)) == u
    assert KeyKind.TEXT.parse_document_id("x") == "x"


@pytest.mark.parametrize("doc_id", ["007", "-0", "+5", " 5", "5\n", "1e3"])
def test_only_the_keys_own_text_form_names_an_integer_row(doc_id):
    # Documents get their ids from key::text; "007" is some other document, not product 7's.
    assert KeyKind.INTEGER.parse_document_id(doc_id) is None


def test_only_the_canonical_uuid_text_names_a_row():
    u = uuid.uuid4()
    for other in (str(u).upper(), u.hex, f"{{{u}}}", f"urn:uuid:{u}", f"{u}\n"):
        assert KeyKind.UUID.parse_document_id(other) is None


def test_unsupported_key_type_is_refused():
    with pytest.raises(ValueError, match="unsupported key type"):
        KeyKind.from_pg_type("numeric")
