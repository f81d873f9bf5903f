"""The batch against Dify 1.14.1's own server: the real loader and worker over the wire (the
emulator, the Sheets and Cloud Tasks stand-ins), Dify's own answers."""

from __future__ import annotations

import json
import time

import pytest

from tests.dify_server.conftest import HELPER, DifyServer, until_paused
from tests.support.proxy import FaultyProxy
from tests.support.servers import wait_for

pytestmark = [pytest.mark.dify_server, pytest.mark.emulator]
FORM_HEADER = ["id", "title", "language", "count", "notes", "doc", "pics"]
PNG, PDF = f"{HELPER}/files/a.png", f"{HELPER}/files/report.pdf"


def answer(row: dict) -> dict:
    return json.loads(row["result"])


@pytest.mark.parametrize("mode", ["streaming", "blocking"])
def test_valid_rows_succeed_in_both_modes_with_korean_text_blank_cells_and_files(run_batch, mode):
    sheet = [
        FORM_HEADER,
        ["k1", "안녕하세요, 세계 🐱", "ko", "3", "", "", ""],
        ["k2", "빈 선택 칸", "", "", "메모 한 줄", "", ""],  # blank optional select and number
        ["k3", "숫자 1_000", "en", "1_000", "", "", ""],
        ["f1", "문서", "", "", "", PDF, ""],
        ["f2", "확장자 없는 문서", "", "", "", f"{HELPER}/files/report", ""],
        ["f3", "그림 두 장", "", "", "", "", f"{PNG}\n{HELPER}/files/b.jpg"],
        [
            "f4",
            "없는 파일 (404): 읽는 노드가 없으면 실행됨",
            "",
            "",
            "",
            f"{HELPER}/files/missing.pdf",
            "",
        ],
    ]
    batch = run_batch(sheet, app="form", mode=mode)
    assert {i: r["status"] for i, r in batch.rows.items()} == {
        i: "SUCCESS" for i in ("k1", "k2", "k3", "f1", "f2", "f3", "f4")
    }, {i: r.get("error") for i, r in batch.rows.items()}
    assert answer(batch.rows["k1"]) == {
        "answer": "안녕하세요, 세계 🐱",
        "language": "ko",
        "count": 3,
    }
    assert answer(batch.rows["k2"])["language"] is None
    assert answer(batch.rows["k3"])["count"] == 1000
    assert all(r["attempts"] == 1 for r in batch.rows.values())


REFUSED = {
    # row id: (cells after id, Dify's own reason)
    "r-missing": (["", "ko", "", "", "", ""], "title is required in input form"),
    "r-long": (["가" * 49, "", "", "", "", ""], "title in input form must be less than 48"),
    "r-select": (["t", "fr", "", "", "", ""], "language in input form must be one of the"),
    "r-number": (["t", "", "1e5", "", "", ""], "count in input form must be a valid number"),
    # With the check off, a file cell goes as the URL text, which Dify refuses as such.
    "r-files": (["t", "", "", "", "", f"{PNG}\n{PNG}\n{PNG}"], "must be a list of files"),
    "r-type": (["t", "", "", "", PNG, ""], "doc in input form must be a file"),
}


@pytest.mark.parametrize("mode", ["streaming", "blocking"])
def test_each_refused_input_fails_at_the_first_attempt_with_difys_own_reason(run_batch, mode):
    """The loader's check is off: the worker meets Dify's refusal itself. In streaming mode
    Dify answers a refused input with silence; the row still ends FAILED with Dify's reason,
    at its first attempt, and Dify started no run for it."""
    sheet = [FORM_HEADER, ["ok", "좋은 행", "", "", "", "", ""]]
    sheet += [[row_id, *cells] for row_id, (cells, _) in REFUSED.items()]
    batch = run_batch(sheet, app="form", mode=mode, CHECK_INPUTS="false", MAX_ATTEMPTS="3")
    assert batch.rows["ok"]["status"] == "SUCCESS"
    for row_id, (_, reason) in REFUSED.items():
        row = batch.rows[row_id]
        assert row["status"] == "FAILED", row_id
        assert row["attempts"] == 1, row_id
        assert reason in row["error"], (row_id, row["error"])


def test_the_loaders_check_keeps_what_dify_runs_and_refuses_what_dify_refuses(run_batch):
    """The issue's sheet, default settings (streaming, the loader's input check on)."""
    sheet = [FORM_HEADER, ["ok", "좋은 행", "", "", "", "", ""]]
    sheet += [["ok2", "둘째", "", "1_000", "", f"{HELPER}/files/report", ""]]
    sheet += [[row_id, *cells] for row_id, (cells, _) in REFUSED.items()]
    # A `.bin` name: Dify would detect a `custom` file where a document belongs.
    sheet += [["r-detected", "t", "", "", "", f"{HELPER}/files/data.bin", ""]]
    batch = run_batch(sheet, app="form")
    assert batch.summary["input_check"]["refused"] == len(REFUSED) + 1
    assert {batch.rows["ok"]["status"], batch.rows["ok2"]["status"]} == {"SUCCESS"}
    expected = {
        "r-missing": "'title' is required",
        "r-long": "'title' allows at most 48 characters",
        "r-select": "'language' must be one of ko, en",
        "r-number": "'count' must be a number",
        "r-files": "'pics' takes at most 2 files",
        "r-type": f"'doc' takes a file: it takes document files; '{PNG}' names a .png",
        "r-detected": "names a .bin file (custom)",
    }
    for row_id, needle in expected.items():
        assert batch.rows[row_id]["status"] == "FAILED"
        assert needle in batch.rows[row_id]["error"], batch.rows[row_id]["error"]


def test_a_file_host_that_is_down_is_the_rows_transient_failure(run_batch):
    down = "http://127.0.0.1:9/report.pdf"  # nothing listens on port 9
    sheet = [FORM_HEADER, ["down", "호스트 다운", "", "", "", down, ""]]
    batch = run_batch(sheet, app="form", mode="blocking", MAX_ATTEMPTS="2")
    row = batch.rows["down"]
    assert row["status"] == "FAILED"
    assert row["attempts"] == 2  # retried, not failed for good at the first answer
    assert "gave up after 2 attempts" in row["error"]
    assert "file_unreachable" in row["error"]


@pytest.mark.parametrize("mode", ["streaming", "blocking"])
def test_an_app_limit_below_the_queue_cap_finishes_every_row_once(
    run_batch, dify_server: DifyServer, mode
):
    sheet = [["id", "question", "delay"], *[[f"c{i}", f"질문 {i}", "2"] for i in range(6)]]
    with dify_server.limit("batch-slow", 2):
        batch = run_batch(sheet, app="batch-slow", mode=mode, cap=3)
    assert {r["status"] for r in batch.rows.values()} == {"SUCCESS"}
    assert all(r["attempts"] == 1 for r in batch.rows.values())  # a refusal is not charged
    assert len(dify_server.runs("batch-slow", batch.user)) == 6  # each row ran once


def test_a_limit_of_one_in_blocking_mode_runs_one_row_at_a_time(run_batch, dify_server: DifyServer):
    sheet = [["id", "question", "delay"], *[[f"b{i}", f"질문 {i}", "1"] for i in range(4)]]
    with dify_server.limit("batch-slow", 1):
        batch = run_batch(sheet, app="batch-slow", mode="blocking", cap=3)
    assert {r["status"] for r in batch.rows.values()} == {"SUCCESS"}
    assert len(dify_server.runs("batch-slow", batch.user)) == 4


def test_a_limit_of_one_in_streaming_mode_pauses_the_batch_and_says_what_to_change(
    run_batch, dify_server: DifyServer
):
    sheet = [["id", "question", "delay"], *[[f"s{i}", f"질문 {i}", "0"] for i in range(4)]]
    with dify_server.limit("batch-slow", 1):
        batch = run_batch(
            sheet, app="batch-slow", cap=2, settle=lambda _s: True, during=until_paused
        )
    assert {r["status"] for r in batch.rows.values()} == {"PENDING"}
    assert all(r["attempts"] == 0 for r in batch.rows.values())
    assert dify_server.runs("batch-slow", batch.user) == []
    assert len(batch.pause_notes) == 1
    note = batch.pause_notes[0]
    assert note.startswith("concurrency_limit:")
    assert "max_active_requests) is 1" in note
    assert "DIFY_RESPONSE_MODE=blocking" in note


def test_a_wrong_key_pauses_the_batch_without_charging_a_row(run_batch):
    sheet = [["id", "question"], *[[f"w{i}", "질문"] for i in range(3)]]
    batch = run_batch(
        sheet,
        app="echo",
        key="app-ThisKeyIsNotOneDifyKnows",
        CHECK_INPUTS="false",
        settle=lambda _s: True,
        during=until_paused,
    )
    assert {r["status"] for r in batch.rows.values()} == {"PENDING"}
    assert all(r["attempts"] == 0 for r in batch.rows.values())
    assert len(batch.pause_notes) == 1
    assert batch.pause_notes[0].startswith("unauthorized:")


def test_the_loader_names_a_wrong_key_before_anything_runs(run_batch):
    batch = run_batch(
        [["id", "question"], ["x", "질문"]], app="echo", key="app-ThisKeyIsNotOneDifyKnows"
    )
    assert batch.rows == {}
    assert "Access token is invalid" in json.dumps(batch.summary)


def test_a_run_past_the_timeout_is_stopped_and_fails_after_its_attempts(
    run_batch, dify_server: DifyServer
):
    sheet = [["id", "question", "delay"], ["slow", "느린 행", "40"]]
    batch = run_batch(
        sheet,
        app="batch-slow",
        mode="streaming",
        DIFY_API_TIMEOUT_MINUTES="0.25",
        TIMEOUT_MARGIN_SECONDS="10",
        MAX_ATTEMPTS="1",
    )
    row = batch.rows["slow"]
    assert row["status"] == "FAILED"
    assert "timeout" in row["error"]
    assert row["workflow_run_id"]
    assert len(dify_server.runs("batch-slow", batch.user)) == 1


def test_a_stream_cut_after_workflow_started_is_looked_up_not_run_again(
    run_batch, dify_server: DifyServer
):
    proxy = FaultyProxy(dify_server.url.split("//", 1)[1].split("/", 1)[0])
    cuts: list[str] = []

    def cut_once_started(_queue, user: str) -> None:
        # Dify notes a run (its workflow log) when it sends workflow_started.
        wait_for(lambda: len(dify_server.runs("batch-slow", user)) == 1, 60)
        time.sleep(0.5)
        proxy.cut()
        cuts.append(user)
        proxy.restore()

    try:
        batch = run_batch(
            [["id", "question", "delay"], ["cut", "끊긴 스트림", "6"]],
            app="batch-slow",
            endpoint=f"http://{proxy.host}/v1/workflows/run",
            during=cut_once_started,
        )
    finally:
        proxy.stop()
    assert cuts == [batch.user]
    assert batch.rows["cut"]["status"] == "SUCCESS"
    assert batch.rows["cut"]["attempts"] == 1
    assert json.loads(batch.rows["cut"]["result"]) == {"answer": "끊긴 스트림"}
    assert len(dify_server.runs("batch-slow", batch.user)) == 1  # looked up, not run again
