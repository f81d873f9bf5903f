"""The write-back planner, the result-column setting and the input form check: pure."""

from datetime import UTC, datetime

import pytest

from shared.core.errors import ConfigError
from shared.core.form_check import (
    Variable,
    check_row,
    missing_required,
    parse_form,
    unknown_columns,
)
from shared.core.write_back import (
    MAX_CELL_CHARS,
    Finished,
    ResultColumns,
    cell_text,
    parse_result_columns,
    plan_write_back,
)

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def done(row_id, outputs=None, status="SUCCESS", error=None):
    return Finished(row_id, status, outputs, error, NOW)


def test_result_columns_parse_and_refuse_what_is_not_a_mapping():
    assert parse_result_columns("answer->Answer, score->점수") == (
        ("answer", "Answer"),
        ("score", "점수"),
    )
    assert parse_result_columns("") == ()
    with pytest.raises(ConfigError, match="RESULT_COLUMNS"):
        parse_result_columns("answer=Answer")
    with pytest.raises(ConfigError, match="twice"):
        parse_result_columns("a->X, b->X")


def test_the_plan_adds_missing_headers_right_of_the_existing_ones():
    plan = plan_write_back(
        ["id", "question", "Answer"],
        known_result_headers=[],
        row_numbers={"r1": 2},
        finished=[done("r1", {"answer": "yes", "score": 3})],
        columns=ResultColumns(mapping=(("answer", "Answer"), ("score", "Score"))),
    )
    assert plan.new_headers == ["Score", "dify_status", "dify_error"]
    assert plan.cells["r1"] == {2: "yes", 3: 3, 4: "SUCCESS", 5: ""}


def test_input_cells_are_never_written_even_when_an_output_has_their_name():
    plan = plan_write_back(
        ["id", "question"],
        known_result_headers=[],
        row_numbers={"r1": 2},
        finished=[done("r1", {"question": "echoed", "text": "t"})],
        columns=ResultColumns(),
    )
    assert plan.input_columns_skipped == {"question"}
    assert 1 not in plan.cells["r1"]
    assert "text" in plan.new_headers


def test_rows_gone_from_the_sheet_are_done_with_nothing_to_write():
    plan = plan_write_back(
        ["id"],
        known_result_headers=[],
        row_numbers={},
        finished=[done("gone")],
        columns=ResultColumns(),
    )
    assert (plan.not_in_sheet, plan.cells) == (["gone"], {})


def test_cells_are_text_numbers_or_json_and_cut_visibly():
    assert cell_text({"a": [1, "가"]}) == '{"a": [1, "가"]}'
    assert cell_text(True) == "true"
    assert cell_text(7) == 7
    cut = cell_text("x" * 60_000)
    assert len(cut) == MAX_CELL_CHARS
    assert "60,000 characters" in cut


FORM = parse_form(
    {
        "user_input_form": [
            {"text-input": {"variable": "q", "required": True, "max_length": 5}},
            {"select": {"variable": "g", "options": ["a", "b"]}},
            {"number": {"variable": "n"}},
            {"file-list": {"variable": "docs", "allowed_file_types": ["document", "image"]}},
            {"paragraph": {"label": "no variable"}},
        ]
    }
)


def test_the_form_is_read_as_dify_sends_it():
    assert [v.name for v in FORM] == ["q", "g", "n", "docs"]
    assert FORM[0] == Variable("q", "text-input", True, 5, (), ())
    assert missing_required(FORM, ["g"]) == ["q"]
    assert unknown_columns(FORM, ["q", "extra"]) == ["extra"]


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ({"q": ""}, "'q' is required"),
        ({"q": "abcdef"}, "at most 5 characters"),
        ({"q": "ok", "g": "c"}, "'g' must be one of a, b"),
        ({"q": "ok", "n": "1,5"}, "'n' must be a number"),
        ({"q": "ok", "docs": "not a url"}, "http(s) URL"),
    ],
)
def test_each_rule_names_its_column(inputs, needle):
    _, reason = check_row(FORM, inputs)
    assert reason is not None
    assert reason.startswith("input_check:")
    assert needle in reason


def test_a_good_row_is_sent_with_file_objects():
    sent, reason = check_row(
        FORM, {"q": "ok", "n": "-2.5e3", "docs": "https://x.io/a.PDF\nhttps://x.io/b"}
    )
    assert reason is None
    # Dify (strict type check) refuses `custom` for a file it detects as another type: with no
    # extension, the first concrete type the variable allows is sent.
    assert [d["type"] for d in sent["docs"]] == ["document", "document"]
    assert sent["n"] == "-2.5e3"  # Dify converts numeric strings itself
