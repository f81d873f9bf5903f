"""The write-back planner, the result-column setting and the input form check: pure."""

import math
from datetime import UTC, datetime

import pytest

from shared.core.errors import ConfigError, SheetError
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
    columns_of_people,
    locate,
    missing_headers,
    parse_result_columns,
    plan_write_back,
    refuse_columns_of_people,
    utf16_len,
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


def test_the_plan_names_each_cell_by_header_and_lists_the_result_headers():
    plan = plan_write_back(
        ["id", "question", "Answer"],
        known_result_headers=[],
        finished=[done("r1", {"answer": "yes", "score": 3})],
        columns=ResultColumns(mapping=(("answer", "Answer"), ("score", "Score"))),
    )
    assert plan.headers == ["Answer", "Score", "dify_status", "dify_error"]
    assert missing_headers(["id", "question", "Answer"], plan.headers) == [
        "Score",
        "dify_status",
        "dify_error",
    ]
    assert plan.cells["r1"] == {
        "Answer": "yes",
        "Score": 3,
        "dify_status": "SUCCESS",
        "dify_error": "",
    }


def test_input_cells_are_never_written_even_when_an_output_has_their_name():
    plan = plan_write_back(
        ["id", "question"],
        known_result_headers=[],
        finished=[done("r1", {"question": "echoed", "text": "t"})],
        columns=ResultColumns(),
    )
    assert plan.input_columns_skipped == {"question"}
    assert "question" not in plan.cells["r1"]
    assert "text" in plan.headers


def test_rows_are_located_by_id_now_and_repeated_ids_are_not_written():
    located = locate(["a", " b ", "", "c", "c"], ["a", "b", "c", "gone"])
    assert located.rows == {"a": 2, "b": 3}
    assert located.ambiguous == ["c"]
    assert located.missing == ["gone"]


def test_a_persons_column_under_a_result_header_is_named():
    columns = ResultColumns(mapping=(("answer", "Answer"),))
    header = ["id", "question", "Answer", "dify_status"]
    people = columns_of_people(
        header, columns=columns, known_result_headers=["dify_status"], columns_with_data={2, 3}
    )
    assert people == ["Answer"]  # dify_status was written by an earlier run: ours
    assert (
        columns_of_people(header, columns=columns, known_result_headers=[], columns_with_data=set())
        == []
    )  # an empty column under a result header is taken over
    with pytest.raises(SheetError, match=r"'Answer'.*Nothing was run or written"):
        refuse_columns_of_people(people, columns)


def test_cells_are_text_numbers_or_json_and_cut_visibly():
    assert cell_text({"a": [1, "가"]}) == '{"a": [1, "가"]}'
    assert cell_text(True) == "true"
    assert cell_text(7) == 7
    cut = cell_text("x" * 60_000)
    assert len(cut) == MAX_CELL_CHARS
    assert "60,000 characters" in cut


def test_values_the_api_refuses_become_text_it_takes():
    assert [cell_text(v) for v in (math.nan, math.inf, -math.inf)] == ["nan", "inf", "-inf"]
    assert cell_text({"x": math.nan}) == '{"x": NaN}'  # inside JSON text: just text
    assert cell_text(10**30) == str(10**30)
    assert cell_text(2**53) == 2**53
    # Sheets counts UTF-16 code units: 30,000 cats are 60,000 units, over the limit.
    cats = cell_text("🐱" * 30_000)
    assert utf16_len(cats) <= MAX_CELL_CHARS
    assert "30,000 characters" in cats
    assert cell_text("🐱" * 25_000) == "🐱" * 25_000


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


def test_the_pacer_allows_a_burst_then_one_request_a_second():
    from shared.adapters.sheet_writer import Pacer

    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(rate=1.0, burst=3, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        pacer.wait()
    assert slept == [pytest.approx(1.0), pytest.approx(1.0)]  # 3 at once, then one a second
    now[0] += 10  # idle: the burst refills, but never past its size
    for _ in range(3):
        pacer.wait()
    assert len(slept) == 2
    pacer.wait()
    assert len(slept) == 3
