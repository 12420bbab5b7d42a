"""The file source's readers and its identity, without a database: how each input becomes rows
(line numbers, aliases, missing columns, blank and bad rows, rejected files)."""

from __future__ import annotations

import io
import json

import pytest

from worker.file_source import (
    BadRow,
    Columns,
    CsvFiles,
    FileRejected,
    JsonLines,
    ResearchJson,
    SourceError,
    Tally,
    _KeyMap,
    fingerprint,
    identity,
    source_files,
)

FACTS = Columns(["poi_id", "area_id", "topic", "fact_text", "sort_order"], aliases={"text": "fact_text"})
CODES = Columns(["code", "merchant_id", "serial", "batch_id", "points"], aliases={"batch_code": "batch_id"})


def read(reader, data: bytes, columns: Columns = FACTS) -> tuple[list, Tally]:
    """(line, row) as the reader gives them, each row shown as a dict of its non-NULL columns."""
    tally = Tally()
    rows = []
    for line, row in reader.read(io.BytesIO(data), columns, tally):
        assert isinstance(row, BadRow) or (type(row) is tuple and len(row) == len(columns.names))
        rows.append((line, row if isinstance(row, BadRow) else {n: v for n, v in zip(columns.names, row) if v is not None}))
    return rows, tally


# -- JSON Lines --------------------------------------------------------------------------------


def test_json_lines_rows_keep_their_line_numbers_and_blank_lines_are_only_counted():
    data = b'{"poi_id": "p1", "topic": "food", "text": "Serves fish."}\n\n   \n{"area_id": "a1", "topic": "history", "fact_text": "Old.", "extra": 1}\n'
    rows, tally = read(JsonLines(), data)
    assert rows == [
        (1, {"poi_id": "p1", "topic": "food", "fact_text": "Serves fish."}),  # the alias `text` is fact_text
        (4, {"area_id": "a1", "topic": "history", "fact_text": "Old."}),  # an unknown key is ignored
    ]
    assert tally.blank == 2


def test_a_json_line_that_is_not_an_object_is_a_bad_row_and_the_rest_goes_on():
    data = b'{"topic": "food"}\n{"topic": \n[1, 2]\n"text"\n\xff\xfe\n{"topic": "people"}\n'
    rows, _ = read(JsonLines(), data)
    assert [line for line, _ in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0][1] == {"topic": "food"} and rows[5][1] == {"topic": "people"}
    bad = {line: row.error for line, row in rows if isinstance(row, BadRow)}
    assert set(bad) == {2, 3, 4, 5}
    assert bad[2].startswith("not JSON: ")
    assert bad[3] == "not a JSON object but an array"
    assert bad[4] == "not a JSON object but a string"
    assert bad[5].startswith("not JSON: ")  # not UTF-8 either


def test_a_json_line_with_a_key_and_its_alias_is_a_bad_row():
    rows, _ = read(JsonLines(), b'{"text": "a", "fact_text": "b"}\n')
    assert rows == [(1, BadRow(1, "keys 'text' and 'fact_text' both name column fact_text"))]


def test_a_json_lines_file_may_start_with_a_bom_and_end_without_a_newline():
    rows, tally = read(JsonLines(), b'\xef\xbb\xbf{"topic": "food"}\r\n{"topic": "nature"}')
    assert rows == [(1, {"topic": "food"}), (2, {"topic": "nature"})]
    rows, tally = read(JsonLines(), b'\xef\xbb\xbf\r\n{"topic": "food"}\r\n')  # a blank first line with a BOM
    assert rows == [(2, {"topic": "food"})] and tally.blank == 1


def test_a_research_file_may_start_with_a_bom():
    rows, _ = read(ResearchJson(), b'\xef\xbb\xbf{"area_id": "a1", "facts": [{"topic": "nature"}]}')
    assert rows == [(1, {"topic": "nature", "area_id": "a1"})]


# -- research JSON -----------------------------------------------------------------------------


def test_each_research_fact_is_a_row_with_its_files_parent_copied_in():
    doc = {
        "poi_id": "google-1",
        "name": "Antikvariatet",
        "facts": [
            {"topic": "history", "fact_text": "Fra 1700-tallet.", "sort_order": 1},
            "not a fact",
            {"topic": "food", "fact_text": "Serverer mat.", "poi_id": "google-1"},
            {"topic": "food", "fact_text": "Elsewhere.", "poi_id": "google-2"},
        ],
    }
    rows, tally = read(ResearchJson(), json.dumps(doc).encode())
    assert rows == [
        (1, {"topic": "history", "fact_text": "Fra 1700-tallet.", "sort_order": "1", "poi_id": "google-1"}),
        (2, BadRow(2, "fact is not a JSON object but a string")),
        (3, {"topic": "food", "fact_text": "Serverer mat.", "poi_id": "google-1"}),
        (4, BadRow(4, "fact's poi_id 'google-2' is not its file's 'google-1'")),
    ]
    assert tally.blank == 0


def test_an_area_research_file_copies_its_area_id():
    rows, _ = read(ResearchJson(), json.dumps({"area_id": "a1", "facts": [{"topic": "nature", "fact_text": "Fjord."}]}).encode())
    assert rows == [(1, {"topic": "nature", "fact_text": "Fjord.", "area_id": "a1"})]


@pytest.mark.parametrize(
    "data, reason",
    [
        (b'{"poi_id": "p", "facts": [', "not JSON: "),
        (b'[{"topic": "food"}]', "not a JSON object but an array"),
        (b'{"poi_id": "p"}', "has no 'facts' array"),
        (b'{"poi_id": "p", "facts": {"topic": "food"}}', "'facts' is an object, not an array"),
    ],
)
def test_a_research_file_that_is_not_an_object_with_facts_is_rejected(data, reason):
    with pytest.raises(FileRejected) as rejected:
        read(ResearchJson(), data)
    assert str(rejected.value).startswith(reason)


def test_a_research_directory_skips_its_manifest_and_other_files(tmp_path):
    for name in ("b.json", "a.json", "manifest.json", "notes.txt", ".hidden.json"):
        (tmp_path / name).write_text('{"facts": []}')
    (tmp_path / "sub.json").mkdir()
    assert [p.name for p in ResearchJson().files(tmp_path)] == ["a.json", "b.json"]


# -- CSV ---------------------------------------------------------------------------------------


def test_csv_columns_are_mapped_by_header_name_and_alias_and_a_missing_column_is_null():
    data = b"Code, merchant_id ,batch_code,points\r\nc1,m1,B7,10\r\n,,,\r\n\r\nc2,m1,,5\r\n"
    rows, tally = read(CsvFiles(), data, CODES)
    # batch_code is batch_id; serial is absent (NULL); an empty field is NULL too.
    assert rows == [
        (2, {"code": "c1", "merchant_id": "m1", "batch_id": "B7", "points": "10"}),
        (5, {"code": "c2", "merchant_id": "m1", "points": "5"}),
    ]
    assert tally.blank == 2


def test_a_csv_row_is_numbered_by_the_line_it_starts_on_and_a_ragged_row_is_bad():
    data = b'code,serial\n"multi\nline",s1\nc2\nc3,s3,extra\nc4,s4\n'
    rows, _ = read(CsvFiles(), data, CODES)
    assert rows == [
        (2, {"code": "multi\nline", "serial": "s1"}),
        (4, BadRow(4, "1 fields where the header has 2")),
        (5, BadRow(5, "3 fields where the header has 2")),
        (6, {"code": "c4", "serial": "s4"}),
    ]


def test_a_header_only_csv_has_no_rows():
    for data in (b"code,batch_id\n", b"code,batch_id\n\n\n", b""):
        rows, _ = read(CsvFiles(), data, CODES)
        assert rows == []


def test_an_unknown_csv_header_rejects_the_file_naming_the_header():
    with pytest.raises(FileRejected) as rejected:
        read(CsvFiles(), b"code,merchant,serial\nc1,m1,s1\n", CODES)
    assert str(rejected.value).startswith("unknown header 'merchant' (column 2); known: ")


def test_a_csv_header_naming_one_column_twice_rejects_the_file():
    with pytest.raises(FileRejected) as rejected:
        read(CsvFiles(), b"code,batch_id,batch_code\n", CODES)
    assert str(rejected.value) == "headers 'batch_id' and 'batch_code' both name column batch_id"


def test_a_csv_that_is_not_utf8_is_rejected_with_its_line():
    with pytest.raises(FileRejected) as rejected:
        read(CsvFiles(), b"\xef\xbb\xbfcode\nok\n\xe6\n", CODES)
    assert str(rejected.value).startswith("line 3: not UTF-8")


# -- columns, values, identity -----------------------------------------------------------------


def test_columns_refuse_reserved_names_and_unknown_alias_targets():
    with pytest.raises(ValueError, match="reserved"):
        Columns(["seq"])
    with pytest.raises(ValueError, match="names no column"):
        Columns(["code"], aliases={"batch_code": "batch_id"})
    with pytest.raises(ValueError, match="plain Postgres type"):
        Columns({"code": "text; DROP TABLE x"})


def test_json_values_become_the_text_copy_writes():
    keys = _KeyMap(Columns({"name": "text", "data": "jsonb", "n": "integer"}))
    assert keys.row({"name": "Trondheim", "data": "Trondheim", "n": 3}) == {"name": "Trondheim", "data": '"Trondheim"', "n": "3"}
    assert keys.row({"name": {"år": 1700}, "data": [1.5, None], "n": True}) == {"name": '{"år": 1700}', "data": "[1.5, null]", "n": "true"}
    assert keys.row({"name": None, "data": None, "other": "ignored"}) == {"name": None, "data": None}
    assert keys.row({"data": {"a": "x\\u0000"}}) == {"data": '{"a": "x\\\\u0000"}'}  # a backslash, not a NUL
    assert keys.row({"data": {"a": "x\x00"}}) == "column data holds a NUL character (\\u0000), which jsonb cannot store"
    assert keys.row({"name": "x\x00"}) == "column name holds a NUL character, which Postgres cannot store"
    assert keys.row({"name": ["x\x00"]}) == {"name": '["x\\u0000"]'}  # as JSON text, text can hold it


def test_csv_fields_are_written_as_they_are_and_a_nul_makes_a_bad_row():
    rows, _ = read(CsvFiles(), b'code,points\n"{""a"": 1}", 7 \nx\x00y,1\n', Columns({"code": "jsonb", "points": "numeric"}))
    assert rows == [(2, {"code": '{"a": 1}', "points": " 7 "}), (3, BadRow(3, "holds a NUL character, which Postgres cannot store"))]


def test_the_identity_is_the_sorted_names_and_digests_of_the_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
        (root / "2.csv").write_text("code\nx\n")
        (root / "1.csv").write_text("code\ny\n")
    assert identity(source_files(a, CsvFiles())) == identity(source_files(b, CsvFiles()))
    assert [name for name, _ in identity(source_files(a, CsvFiles()))] == ["1.csv", "2.csv"]
    before = fingerprint(source_files(a, CsvFiles()))
    (a / "2.csv").write_text("code\nz\n")
    assert fingerprint(source_files(a, CsvFiles())) != before
    (a / "manifest.json").write_text("{}")
    assert [f.name for f in source_files(a, ResearchJson())] == []


def test_a_missing_source_is_an_error_naming_it(tmp_path):
    with pytest.raises(SourceError, match="no such file") as missing:
        source_files(tmp_path / "nope.jsonl", JsonLines())
    # One line, saying where it was looked for and how a file gets there.
    assert "\n" not in str(missing.value)
    assert "worker's own filesystem" in str(missing.value) and "--source /data/nope.jsonl" in str(missing.value)
    with pytest.raises(SourceError, match="not a file"):
        source_files(tmp_path, JsonLines())
    with pytest.raises(SourceError, match="not a directory"):
        (tmp_path / "x.csv").write_text("")
        source_files(tmp_path / "x.csv", CsvFiles())
