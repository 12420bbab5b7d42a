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


def test_unsupported_key_type_is_refused():
    with pytest.raises(ValueError, match="unsupported key type"):
        KeyKind.from_pg_type("numeric")
