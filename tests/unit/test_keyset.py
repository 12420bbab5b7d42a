import uuid

import pytest
from psycopg import sql

from utils.keyset import GroupedKeysetQuery, GroupedPage, KeyKind, KeysetQuery


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


# The statements of KeysetQuery (unchanged without a filter) and of its filtered and grouped forms.
T = sql.Identifier("public", "t")


def text(statement) -> str:
    return statement.as_string(None)


def test_an_unfiltered_keyset_writes_the_statements_it_always_wrote():
    query = KeysetQuery(T, "id", ("deleted_at",))
    assert text(query.statement(True)) == 'SELECT "id", "deleted_at" FROM "public"."t" WHERE "id" > %s ORDER BY "id" LIMIT %s'
    assert text(query.statement(False)) == 'SELECT "id", "deleted_at" FROM "public"."t" ORDER BY "id" LIMIT %s'
    assert query.params(5, 10) == (5, 10) and query.params(None, 10) == (10,)


def test_a_filter_comes_first_in_the_where_clause_and_in_the_parameters():
    query = KeysetQuery(T, "id", (), filter=sql.SQL("a = %s OR b = %s"), filter_params=(1, 2))
    assert text(query.statement(True)) == 'SELECT "id" FROM "public"."t" WHERE (a = %s OR b = %s) AND "id" > %s ORDER BY "id" LIMIT %s'
    assert text(query.statement(False)) == 'SELECT "id" FROM "public"."t" WHERE (a = %s OR b = %s) ORDER BY "id" LIMIT %s'
    assert query.params("k", 10) == (1, 2, "k", 10) and query.params(None, 10) == (1, 2, 10)


@pytest.mark.parametrize("after", [None, 7, "g-7"])
@pytest.mark.parametrize("filter_, filter_params", [(None, ()), (sql.SQL("x = %s AND y < %s"), (3, 4))])
def test_a_grouped_page_statement_has_a_parameter_for_each_placeholder(after, filter_, filter_params):
    query = GroupedKeysetQuery(T, "grp", ("id",), filter=filter_, filter_params=filter_params, row_key="id")
    statement, params = query.statement(after, 10)
    sql_text = text(statement)
    assert sql_text.count("%s") == len(params)
    assert params.count(10) == 1 and params.count(after) == (2 if after is not None else 0)
    if filter_ is not None:
        assert sql_text.count("(x = %s AND y < %s)") == 3, "the filter bounds the head, the test past it and the page"
    assert sql_text.endswith('ORDER BY "grp", "id"')


def test_a_grouped_page_rejects_a_limit_below_one():
    with pytest.raises(ValueError, match="at least 1"):
        GroupedKeysetQuery(T, "grp", ()).page(None, None, 0)  # type: ignore[arg-type]


def test_the_last_group_of_a_page_is_its_last_rows_group():
    rows = [(1, "a"), (1, "b"), (2, "c")]
    assert GroupedKeysetQuery.last_group(rows) == 2
    assert GroupedPage(rows, final=False).last_group == 2
    assert GroupedPage([], final=True).last_group is None
