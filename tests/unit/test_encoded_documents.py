import pytest

from utils.typesense import EncodedDocuments


def test_documents_from_dicts_are_one_json_line_each_and_name_their_ids():
    docs = EncodedDocuments.from_dicts([{"id": "a\nb", "n": 1}, {"id": 7, "s": "é"}])
    assert len(docs) == 2
    assert docs.body == '{"id":"a\\nb","n":1}\n{"id":7,"s":"é"}'
    assert docs.lines == ['{"id":"a\\nb","n":1}', '{"id":7,"s":"é"}']
    assert docs.ids == ["a\nb", "7"]


def test_an_empty_body_holds_no_documents():
    docs = EncodedDocuments.from_lines([])
    assert (len(docs), docs.lines, docs.ids, bool(docs)) == (0, [], [], False)


@pytest.mark.parametrize("body, count", [('{"id":"1"}\n{"id":"2"}', 1), ('{"id":"1"}', 2), ("", 1)])
def test_a_body_whose_line_count_disagrees_with_its_count_is_refused(body, count):
    with pytest.raises(ValueError, match="lines said to hold"):
        EncodedDocuments(body, count)
