"""Sheet cells -> rows: pure, no I/O."""

import pytest

from shared.core.errors import SheetError
from shared.core.rows import RowFilter, column_letter, inputs_hash, parse_rows

HEADER = ["id", "title", "lang"]


def rows(*cells):
    return [(i + 2, list(c)) for i, c in enumerate(cells)]


def test_rows_become_inputs_keyed_by_trimmed_header():
    parsed = parse_rows([" id ", "title ", " lang"], rows(["a", "Hello", "en"]), id_column="0")
    (row,) = parsed.rows
    assert (row.row_number, row.row_id, row.inputs) == (
        2,
        "a",
        {"id": "a", "title": "Hello", "lang": "en"},
    )
    assert row.inputs_hash == inputs_hash({"id": "a", "title": "Hello", "lang": "en"})


def test_short_rows_are_padded_and_blank_rows_skipped():
    parsed = parse_rows(HEADER, rows(["a"], [], ["", "  "], ["b", "x", "y"]), id_column="0")
    assert [r.row_id for r in parsed.rows] == ["a", "b"]
    assert parsed.rows[0].inputs == {"id": "a", "title": "", "lang": ""}
    assert parsed.blank == 2


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("1", "Hello"), ("title", "Hello"), ("ROW_NUMBER", "2"), ("row_number", "2")],
)
def test_id_column_by_index_name_or_row_number(spec, expected):
    parsed = parse_rows(HEADER, rows(["a", "Hello", "en"]), id_column=spec)
    assert parsed.rows[0].row_id == expected


def test_empty_ids_are_invalid_and_reported():
    parsed = parse_rows(HEADER, rows(["", "no id", "en"], ["b", "ok", "en"]), id_column="0")
    assert [r.row_id for r in parsed.rows] == ["b"]
    assert [(i.row_number, i.reason) for i in parsed.invalid] == [(2, "the id cell is empty")]


def test_reserved_and_oversized_ids_are_invalid():
    parsed = parse_rows(HEADER, rows(["__key__"], ["x" * 1501]), id_column="0")
    assert [i.row_number for i in parsed.invalid] == [2, 3]
    assert parsed.rows == []


def test_of_rows_sharing_an_id_the_first_wins():
    parsed = parse_rows(HEADER, rows(["a", "first"], ["b"], ["a", "second"]), id_column="0")
    assert [(r.row_id, r.inputs["title"]) for r in parsed.rows] == [("a", "first"), ("b", "")]
    assert [(d.row_id, d.row_number, d.first_row_number) for d in parsed.duplicates] == [
        ("a", 4, 2)
    ]


def test_unicode_ids_work():
    parsed = parse_rows(HEADER, rows(["행-1 🐱", "제목"]), id_column="0")
    assert parsed.rows[0].row_id == "행-1 🐱"


def test_values_right_of_the_header_make_the_row_invalid():
    parsed = parse_rows(
        HEADER, rows(["a", "t", "en", "stray note"], ["b", "t", "en", ""]), id_column="0"
    )
    assert [r.row_id for r in parsed.rows] == ["b"]
    assert "right of the last header column (C)" in parsed.invalid[0].reason


def test_the_row_filter_keeps_marked_rows_and_drops_its_column_from_inputs():
    header = ["id", "title", "target"]
    parsed = parse_rows(
        header,
        rows(["a", "x", "TRUE"], ["b", "y", "FALSE"], ["c", "z"], ["d", "w", " true "]),
        id_column="0",
        row_filter=RowFilter("target", "TRUE"),
    )
    assert [r.row_id for r in parsed.rows] == ["a", "d"]
    assert parsed.filtered_out == 2
    assert parsed.rows[0].inputs == {"id": "a", "title": "x"}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ([], "first row is empty"),
        (["id", "", "x"], "header cell B1 is blank"),
        (["id", "x", "id"], "header 'id' appears twice (A1 and C1)"),
        ([" id", "id "], "appears twice"),
    ],
)
def test_bad_headers_are_clear_errors(header, message):
    with pytest.raises(SheetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_rows(header, [], id_column="0")


@pytest.mark.parametrize(("spec", "message"), [("7", "only 3 columns"), ("uuid", "not a header")])
def test_a_bad_id_column_is_a_clear_error(spec, message):
    with pytest.raises(SheetError, match=message):
        parse_rows(HEADER, [], id_column=spec)


def test_an_unknown_filter_column_is_a_clear_error():
    with pytest.raises(SheetError, match="ROW_FILTER_COLUMN 'target'"):
        parse_rows(HEADER, [], id_column="0", row_filter=RowFilter("target", "TRUE"))


def test_column_letters():
    assert [column_letter(i) for i in (0, 25, 26, 701, 702)] == ["A", "Z", "AA", "ZZ", "AAA"]
