"""The demo's results file and the export's cells (issue #18): every sheet row present with
its outcome or why it did not run, formula-like cells shown as text, a BOM for Excel."""

import csv
import io

from cli.export import cell, safe_cell, write_sheet_csv

GRID = [
    ["id", "kind", "질문"],
    ["m-1", "math", "=1+2"],
    ["", "math", "no id"],
    ["m-1", "math", "same id again"],
    ["x-1", "poetry", "no workflow for this kind"],
    [],
    ["e-1", "essay", "@ mention"],
]
STORED = [
    {"id": "m-1", "row_number": 2, "status": "SUCCESS", "result": '{"text": "3"}', "attempts": 1},
    {"id": "e-1", "row_number": 7, "status": "FAILED", "error": "-bad", "attempts": 2},
]
SUMMARY = {
    "invalid": [
        {"row_number": 3, "row_id": "", "reason": "the id cell is empty"},
        {"row_number": 5, "row_id": "x-1", "reason": "kind 'poetry' names no workflow"},
    ],
    "duplicate_ids": [{"row_id": "m-1", "row_number": 4, "first_row_number": 2}],
}


def rows_of(text):
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


def test_every_sheet_row_is_in_the_file_in_sheet_order_with_its_outcome():
    out = io.StringIO()
    assert write_sheet_csv(GRID, STORED, SUMMARY, out) == 6
    rows = rows_of(out.getvalue())
    assert [r["row"] for r in rows] == ["2", "3", "4", "5", "6", "7"]
    assert [r["status"] for r in rows] == [
        "SUCCESS",
        "INVALID",
        "DUPLICATE_ID",
        "INVALID",
        "BLANK",
        "FAILED",
    ]
    assert rows[1]["error"] == "the id cell is empty"
    assert "also on row 2" in rows[2]["error"]
    assert "poetry" in rows[3]["error"]
    # The inputs as the sheet holds them (also columns the workflow sees under other names).
    assert (rows[3]["kind"], rows[3]["질문"]) == ("poetry", "no workflow for this kind")
    assert rows[0]["질문"] == "'=1+2"  # shown as text, not run
    assert rows[5]["질문"] == "'@ mention"
    assert rows[5]["error"] == "'-bad"


def test_raw_cells_and_plain_numbers_are_left_as_they_are():
    assert cell("=1+2", raw=True) == "=1+2"
    assert [safe_cell(v) for v in ("-3.5", "+7", "1e5", "-", "\r\n=x")] == [
        "-3.5",
        "+7",
        "1e5",
        "'-",
        "'\r\n=x",
    ]
    out = io.StringIO()
    write_sheet_csv(GRID, STORED, SUMMARY, out, raw=True, bom=False)
    assert out.getvalue().startswith("row,")
    assert "=1+2" in out.getvalue()
