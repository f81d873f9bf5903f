"""Write-back a person can trust (issue #18): results land in the row that holds their id at
the moment of writing or wait for the next run; a person's columns are never written over; one
bad value or refused cell stays with its row. The loader and the worker over real HTTP, the
real google-api-python-client against the Sheets stand-in, Datastore in the emulator."""

from __future__ import annotations

import math

import httpx
import pytest

from local import dify_standin as dify
from shared.core.model import KIND
from tests.integration import test_write_back as base
from tests.integration.test_write_back import column, grid, load, run_rows, set_rows

# The same stack as test_write_back.py: loader, worker, Sheets and Dify stand-ins, emulator.
sheets, llm, stack = base.sheets, base.llm, base.stack

pytestmark = pytest.mark.emulator
HEADER = ["id", "question"]


def finish_rows(stack, sheets, llm, *ids):
    """Each id's row finished with the text `for <id>`; nothing written back yet."""
    set_rows(sheets, HEADER, *[[i, f"q {i}"] for i in ids])
    load(stack)
    llm.script(*[dify.finish({"text": f"for {i}"}) for i in ids])
    run_rows(stack, *ids)


def once_on_first_read_of_ids(sheets, edit):
    """Run `edit(grid)` when the writer first re-reads the id column: after the loader read
    the sheet, before any result is written."""
    done = []

    def hook(path):
        if path.endswith("values:batchGet") and not done:
            done.append(path)
            with sheets._lock:
                edit(grid(sheets))

    sheets.on_request = hook


def texts(sheets):
    return column(sheets, "text")


# -- by identity -------------------------------------------------------------------------------


def test_rows_sorted_after_the_read_get_their_own_results(stack, sheets, llm):
    finish_rows(stack, sheets, llm, "a", "b", "c")

    def sort(rows):
        rows[1:] = sorted(rows[1:], reverse=True)

    once_on_first_read_of_ids(sheets, sort)
    summary = load(stack, write_back_only=True)["write_back"]
    assert [r[0] for r in grid(sheets)[1:]] == ["c", "b", "a"]  # the sort happened
    assert summary["rows_written"] == 3
    assert texts(sheets) == {"a": "for a", "b": "for b", "c": "for c"}
    assert all(r[1] == f"q {r[0]}" for r in grid(sheets)[1:])  # inputs untouched


def test_a_row_inserted_above_after_the_read_gets_nothing(stack, sheets, llm):
    finish_rows(stack, sheets, llm, "a", "b")
    once_on_first_read_of_ids(sheets, lambda g: g.insert(1, ["new", "inserted"]))
    load(stack, write_back_only=True)
    assert texts(sheets) == {"new": "", "a": "for a", "b": "for b"}


def test_a_row_deleted_above_waits_and_is_written_when_it_comes_back(stack, sheets, llm):
    finish_rows(stack, sheets, llm, "a", "b")
    once_on_first_read_of_ids(sheets, lambda g: g.pop(1))
    summary = load(stack, write_back_only=True)["write_back"]
    assert (summary["rows_written"], summary["not_in_sheet"]) == (1, 1)
    assert summary["left_for_next_run"] == 1
    assert texts(sheets) == {"b": "for b"}
    sheets.on_request = None
    grid(sheets).append(["a", "q a"])  # someone undoes the deletion, at the bottom
    assert load(stack, write_back_only=True)["write_back"]["rows_written"] == 1
    assert texts(sheets) == {"b": "for b", "a": "for a"}


def test_an_id_repeated_after_the_read_is_written_nowhere_until_it_is_unique(stack, sheets, llm):
    finish_rows(stack, sheets, llm, "a", "b")
    once_on_first_read_of_ids(sheets, lambda g: g.append(["a", "a copy"]))
    summary = load(stack, write_back_only=True)["write_back"]
    assert summary["ids_in_several_rows"] == 1
    rows = grid(sheets)
    status = rows[0].index("dify_status")
    assert [r[status] if status < len(r) else "" for r in rows[1:]] == ["", "SUCCESS", ""]
    sheets.on_request = None
    rows.pop()  # the copy is removed
    assert load(stack, write_back_only=True)["write_back"]["rows_written"] == 1
    assert texts(sheets)["a"] == "for a"


def test_a_sort_inside_the_write_itself_is_caught_and_rewritten_next_run(stack, sheets, llm):
    finish_rows(stack, sheets, llm, "a", "b")
    sorts = []

    def sort_once(book):  # between the writer's own re-read and its write of the rows
        if not sorts and "dify_status" in book["Sheet1"][0]:
            sorts.append(1)
            rows = book["Sheet1"]
            rows[1:] = list(reversed(rows[1:]))

    sheets.before_write = sort_once
    summary = load(stack, write_back_only=True)["write_back"]
    assert summary["moved_while_writing"] == 2
    assert summary["rows_written"] == 0
    assert summary["left_for_next_run"] == 2
    again = load(stack, write_back_only=True)["write_back"]
    assert again["rows_written"] == 2
    assert texts(sheets) == {"a": "for a", "b": "for b"}


def test_row_number_ids_with_write_back_are_refused_with_a_reason(monkeypatch, stack, sheets):
    monkeypatch.setenv("UNIQUE_ID_COLUMN", "ROW_NUMBER")
    set_rows(sheets, HEADER, ["a", "x"])
    answer = httpx.post(stack["loader"], timeout=60)
    assert answer.status_code == 500
    assert "UNIQUE_ID_COLUMN=ROW_NUMBER" in answer.json()["error"]
    assert "add an id column" in answer.json()["error"]


# -- a person's columns ------------------------------------------------------------------------


def test_a_persons_column_named_as_a_result_column_is_refused_before_anything_runs(
    monkeypatch, stack, sheets, llm, ds_client
):
    monkeypatch.setenv("RESULT_COLUMNS", "answer->Answer")
    set_rows(sheets, [*HEADER, "Answer"], ["a", "x", "the teacher's own answer"], ["b", "y", ""])
    answer = httpx.post(stack["loader"], timeout=60)
    assert answer.status_code == 422
    assert "'Answer'" in answer.json()["error"]
    assert "Nothing was run or written" in answer.json()["error"]
    assert list(ds_client.query(kind=KIND).fetch()) == []
    assert grid(sheets)[1] == ["a", "x", "the teacher's own answer"]


def test_an_empty_column_under_a_result_header_is_used_and_stays_ours(
    monkeypatch, stack, sheets, llm
):
    monkeypatch.setenv("RESULT_COLUMNS", "text->Answer")
    set_rows(sheets, [*HEADER, "Answer"], ["a", "x", ""])
    load(stack)
    llm.script(dify.finish({"text": "yes"}))
    run_rows(stack, "a")
    assert load(stack, write_back_only=True)["write_back"]["rows_written"] == 1
    assert column(sheets, "Answer") == {"a": "yes"}
    again = httpx.post(stack["loader"], timeout=60)  # its data is ours now: not refused
    assert again.status_code == 200
    assert again.json()["skipped"] == {"SUCCESS": 1}


def test_headers_are_never_added_over_a_column_with_data(stack, sheets, llm):
    finish_rows(stack, sheets, llm, "a", "b")
    grid(sheets)[2] += ["someone's note"]  # column C: data, no header
    summary = load(stack, write_back_only=True)["write_back"]
    assert "column C holds data but has no header" in summary["error"]
    assert grid(sheets)[0] == HEADER
    assert grid(sheets)[2] == ["b", "q b", "someone's note"]
    assert summary["left_for_next_run"] == 2


def test_a_narrow_tab_is_never_widened_over_a_column_with_data(stack, sheets, llm):
    finish_rows(stack, sheets, llm, "a")
    sheets.column_count["Sheet1"] = 3  # room for one more column only, and it holds a note
    grid(sheets)[1] += ["a note"]
    summary = load(stack, write_back_only=True)["write_back"]
    assert "column C holds data but has no header" in summary["error"]
    assert grid(sheets)[0] == HEADER
    assert sheets.column_count["Sheet1"] == 3


def test_a_tab_without_spare_columns_is_widened_for_the_result_headers(stack, sheets, llm):
    finish_rows(stack, sheets, llm, "a")
    sheets.column_count["Sheet1"] = 2  # the grid ends at column B
    summary = load(stack, write_back_only=True)["write_back"]
    assert summary["rows_written"] == 1
    assert sheets.column_count["Sheet1"] >= len(grid(sheets)[0]) > 2
    assert texts(sheets) == {"a": "for a"}


# -- failures stay local -----------------------------------------------------------------------


def test_nan_infinity_and_oversized_values_are_written_as_text_the_api_takes(
    monkeypatch, stack, sheets, llm
):
    monkeypatch.setenv("RESULT_COLUMNS", "answer->Answer")
    ids = ["ok1", "nan", "inf", "cats", "ok2"]
    set_rows(sheets, HEADER, *[[i, "q"] for i in ids])
    load(stack)
    llm.script(
        dify.finish({"answer": "fine"}),
        dify.finish({"answer": math.nan}),
        dify.finish({"answer": -math.inf}),
        dify.finish({"answer": "🐱" * 30_000}),  # 60,000 UTF-16 units as Sheets counts
        dify.finish({"answer": 10**40}),
    )
    run_rows(stack, *ids)
    summary = load(stack, write_back_only=True)["write_back"]
    assert (summary["rows_written"], summary["error"]) == (5, None)
    answers = column(sheets, "Answer")
    assert (answers["ok1"], answers["nan"], answers["inf"]) == ("fine", "nan", "-inf")
    assert answers["cats"].startswith("🐱")
    assert "whole output" in answers["cats"]
    assert answers["ok2"] == str(10**40)


def test_a_refused_row_is_isolated_and_every_other_row_is_written(monkeypatch, stack, sheets, llm):
    monkeypatch.setenv("RESULT_COLUMNS", "text->Answer")
    ids = [f"r{i}" for i in range(7)]
    set_rows(sheets, [*HEADER, "Answer", "dify_status", "dify_error"], *[[i, "q"] for i in ids])
    load(stack)
    llm.script(*[dify.finish({"text": f"for {i}"}) for i in ids])
    run_rows(stack, *ids)
    sheets.protected.append(("Sheet1", 6, 6, 2, 2))  # r4's Answer cell (C6) is protected
    summary = load(stack, write_back_only=True)["write_back"]
    assert summary["rows_written"] == 6
    assert summary["refused_count"] == 1
    assert summary["refused"][0]["id"] == "r4"
    assert "protected cell" in summary["refused"][0]["error"]
    answers = column(sheets, "Answer")
    assert answers == {i: ("" if i == "r4" else f"for {i}") for i in ids}
    assert "protected cell" in column(sheets, "dify_error")["r4"]  # its own error column
    assert summary["left_for_next_run"] == 1
    sheets.protected.clear()  # the owner lifts the protection: written next run
    assert load(stack, write_back_only=True)["write_back"]["rows_written"] == 1
    assert column(sheets, "Answer")["r4"] == "for r4"


def test_a_row_finished_while_filtered_out_is_written_not_just_marked(
    monkeypatch, stack, sheets, llm
):
    monkeypatch.setenv("ROW_FILTER_COLUMN", "target")
    monkeypatch.setenv("ROW_FILTER_VALUE", "TRUE")
    set_rows(sheets, [*HEADER, "target"], ["a", "x", "TRUE"], ["b", "y", "TRUE"])
    load(stack)
    llm.script(dify.finish({"text": "for a"}), dify.finish({"text": "for b"}))
    run_rows(stack, "a", "b")
    grid(sheets)[1][2] = "FALSE"  # `a` is filtered out before its result is written
    first = load(stack, write_back_only=True)
    assert first["filtered_out"] == 1
    assert first["write_back"]["rows_written"] == 2
    assert texts(sheets) == {"a": "for a", "b": "for b"}


def test_a_written_row_that_received_a_moved_rows_cells_is_written_again(stack, sheets, llm):
    finish_rows(stack, sheets, llm, "a")
    load(stack, write_back_only=True)  # `a` written and done
    grid(sheets).append(["b", "q b"])
    load(stack)
    llm.script(dify.finish({"text": "for b"}))
    run_rows(stack, "b")
    swaps = []

    def swap_once(book):  # `a` and `b` swap places between the writer's read and its write
        if not swaps:
            swaps.append(1)
            rows = book["Sheet1"]
            rows[1], rows[2] = rows[2], rows[1]

    sheets.before_write = swap_once
    first = load(stack, write_back_only=True)["write_back"]
    assert first["moved_while_writing"] == 1
    assert texts(sheets)["a"] == "for b"  # the race the re-check catches
    second = load(stack, write_back_only=True)["write_back"]
    assert second["rows_written"] == 2  # b in its new place, and a's own result again
    assert texts(sheets) == {"a": "for a", "b": "for b"}
