"""The loader over real HTTP: functions-framework serving loader/main.py, the real
google-api-python-client against the Sheets stand-in, the real google-cloud-tasks client
over gRPC against the Cloud Tasks stand-in, Datastore through the emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest

from local.cloud_tasks_standin import CloudTasksStandIn
from local.sheets_standin import SheetsStandIn
from shared.core.model import KIND
from shared.core.planning import task_id
from tests.conftest import PROJECT
from tests.support.servers import ROOT, serve_function

pytestmark = pytest.mark.emulator
SHEET = "Team's 작업 list"  # a space, an apostrophe and Korean in the tab name
QUEUE = f"projects/{PROJECT}/locations/asia-northeast3/queues/dify"
WORKER_URL = "https://worker.example.run.app"
INVOKER = "invoker@dify-batch-test.iam.gserviceaccount.com"
HEADER = ["id", "title", "lang"]


@pytest.fixture
def sheets() -> Iterator[SheetsStandIn]:
    server = SheetsStandIn({"book": {SHEET: [HEADER]}}).start()
    yield server
    server.stop()


@pytest.fixture
def tasks() -> Iterator[CloudTasksStandIn]:
    server = CloudTasksStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def loader_env(monkeypatch, namespace, sheets, tasks):
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "DATASTORE_NAMESPACE": namespace,
        "SPREADSHEET_ID": "book",
        "SHEET_NAME": SHEET,
        "SHEETS_API_ENDPOINT": sheets.endpoint,
        "SHEET_CHUNK_ROWS": "50",
        "TASKS_LOCATION": "asia-northeast3",
        "TASKS_QUEUE": "dify",
        "WORKER_URL": WORKER_URL,
        "TASKS_SERVICE_ACCOUNT_EMAIL": INVOKER,
        "CLOUD_TASKS_EMULATOR_HOST": tasks.host,
        "DIFY_API_TIMEOUT_MINUTES": "10",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def loader_url(loader_env) -> Iterator[str]:
    with serve_function("loader/main.py", "load_sheet") as url:
        yield url


def set_rows(sheets: SheetsStandIn, *rows: list[str], header: list[str] = HEADER) -> None:
    sheets.spreadsheets["book"][SHEET] = [header, *[list(r) for r in rows]]


def trigger(url: str, **options: object) -> httpx.Response:
    return httpx.post(url, json=options, timeout=300)


def entity(ds_client, row_id):
    return ds_client.get(ds_client.key(KIND, row_id))


def task_name(namespace, row_id, generation=0):
    return f"{QUEUE}/tasks/{task_id(namespace, row_id, generation)}"


# -- the first run and the second ----------------------------------------------------------


def test_new_rows_are_recorded_pending_and_get_one_task_each(
    loader_url, sheets, tasks, ds_client, namespace
):
    set_rows(sheets, ["a", "Hello", "en"], ["행-1", "안녕하세요 🐱", "ko"])
    response = trigger(loader_url)
    assert response.status_code == 200
    summary = response.json()
    assert (summary["rows_read"], summary["new"], summary["tasks_created"]) == (2, 2, 2)
    row = entity(ds_client, "행-1")
    assert row["status"] == "PENDING"
    assert json.loads(row["inputs"]) == {"id": "행-1", "title": "안녕하세요 🐱", "lang": "ko"}
    assert (row["row_number"], row["attempts"], row["generation"]) == (3, 0, 0)
    assert row["inputs_hash"]
    assert tasks.task_names() == sorted([task_name(namespace, "a"), task_name(namespace, "행-1")])
    request = next(r for r in tasks.created if r.task.name == task_name(namespace, "행-1"))
    http = request.task.http_request
    assert request.parent == QUEUE
    assert (http.url, http.http_method.name) == (WORKER_URL, "POST")
    assert json.loads(http.body) == {"id": "행-1"}
    assert http.headers["Content-Type"] == "application/json"
    assert (http.oidc_token.service_account_email, http.oidc_token.audience) == (
        INVOKER,
        WORKER_URL,
    )
    assert request.task.dispatch_deadline.total_seconds() == 660  # 10 min + 60 s margin


def test_a_second_run_on_an_unchanged_sheet_creates_no_task_and_writes_nothing(
    loader_url, sheets, tasks, ds_client
):
    set_rows(sheets, ["a", "x", "en"], ["b", "y", "en"])
    trigger(loader_url)
    before = {e.key.name: e["updated_at"] for e in ds_client.query(kind=KIND).fetch()}
    creates = len(tasks.created)
    summary = trigger(loader_url).json()
    assert (summary["new"], summary["tasks_created"], summary["re_enqueued"]) == (0, 0, {})
    assert summary["skipped"] == {"PENDING": 2}
    assert len(tasks.created) == creates
    after = {e.key.name: e["updated_at"] for e in ds_client.query(kind=KIND).fetch()}
    assert after == before


def test_the_summary_reports_the_datastore_work_of_each_run(loader_url, sheets, ds_client):
    set_rows(sheets, ["a", "x", "en"], ["b", "y", "en"], ["c", "z", "en"])
    first = trigger(loader_url).json()
    # The digest's head, 3 keys looked up, 3 re-read in the inserting transaction, the
    # last-run note; 3 entities and the note written; one query (expired leases).
    assert first["datastore"] == {
        "entities_read": 8,
        "entities_written": 4,
        "queries": 1,
        "keys_read": 0,
    }
    second = trigger(loader_url).json()
    # The digest's head, 3 lookups, the note; only the note written; expired leases and
    # finished-since.
    assert second["datastore"] == {
        "entities_read": 5,
        "entities_written": 1,
        "queries": 2,
        "keys_read": 0,
    }
    finish(ds_client, "a")
    third = trigger(loader_url).json()
    # The finished row also comes back from finished-since; the digest now holds it (one
    # chunk and its head written).
    assert third["datastore"]["entities_read"] == 6
    assert third["datastore"]["entities_written"] == 3
    assert third["finished_since_last_run"]["succeeded"] == 1
    fourth = trigger(loader_url).json()
    # The digest (head and chunk), b and c looked up, the note; keys-only queries for the
    # unfinished rows find b and c.
    assert fourth["datastore"] == {
        "entities_read": 5,
        "entities_written": 1,
        "queries": 4,
        "keys_read": 2,
    }
    assert fourth["skipped"] == {"SUCCESS": 1, "PENDING": 2}


def finish(ds_client, row_id, status="SUCCESS", **changes):
    """What a worker's record does (or a hand edit that sets only `changes`)."""
    row = entity(ds_client, row_id)
    row.update(status=status, finished_at=datetime.now(UTC), **changes)
    ds_client.put(row)


# -- a sheet at rest ---------------------------------------------------------------------------


def test_a_sheet_at_rest_is_not_read_row_by_row(loader_url, sheets, tasks, ds_client):
    set_rows(sheets, *[[f"r{i}", f"title {i}", "en"] for i in range(30)])
    trigger(loader_url)
    for i in range(30):
        finish(ds_client, f"r{i}", "FAILED" if i == 0 else "SUCCESS", error="boom")
    trigger(loader_url)  # reads every row once, and notes what it saw
    creates = len(tasks.created)
    summary = trigger(loader_url).json()
    assert summary["skipped"] == {"SUCCESS": 29, "FAILED": 1}
    assert (summary["new"], summary["tasks_created"], summary["re_enqueued"]) == (0, 0, {})
    # The digest (head and one chunk) and the last-run note: no row's entity.
    assert summary["datastore"]["entities_read"] == 3
    assert summary["datastore"]["keys_read"] == 0
    assert len(tasks.created) == creates


def test_a_row_changed_in_the_sheet_is_read_again_and_reprocessed(loader_url, sheets, ds_client):
    set_rows(sheets, ["a", "old", "en"], ["b", "same", "en"])
    trigger(loader_url)
    finish(ds_client, "a")
    finish(ds_client, "b")
    trigger(loader_url)
    set_rows(sheets, ["a", "new", "en"], ["b", "same", "en"])
    summary = trigger(loader_url, reprocess_changed=True).json()
    assert summary["re_enqueued"] == {"reprocess_changed": 1}
    assert summary["skipped"] == {"SUCCESS": 1}
    assert json.loads(entity(ds_client, "a")["inputs"])["title"] == "new"
    # The next run reads the re-run row (PENDING now), not the one at rest.
    again = trigger(loader_url).json()
    assert again["skipped"] == {"SUCCESS": 1, "PENDING": 1}
    assert again["datastore"]["entities_read"] == 2 + 1 + 1  # digest, a, the note


def test_a_finished_entity_set_back_to_pending_by_hand_is_re_enqueued(
    loader_url, sheets, ds_client, tasks, namespace
):
    set_rows(sheets, ["a", "x", "en"], ["b", "y", "en"])
    trigger(loader_url)
    finish(ds_client, "a")
    finish(ds_client, "b")
    trigger(loader_url)
    tasks.clear()  # both ran: their tasks are done
    row = entity(ds_client, "a")
    row.update(status="PENDING")  # by hand, in the console: updated_at untouched
    ds_client.put(row)
    summary = trigger(loader_url).json()
    assert summary["re_enqueued"] == {"lost_task": 1}
    assert summary["skipped"] == {"SUCCESS": 1}
    assert task_name(namespace, "a", 1) in tasks.task_names()


def test_retry_failed_finds_rows_failed_since_the_last_run_even_by_hand(
    loader_url, sheets, ds_client
):
    set_rows(sheets, ["a", "x", "en"], ["b", "y", "en"])
    trigger(loader_url)
    finish(ds_client, "a")
    finish(ds_client, "b")
    trigger(loader_url)
    row = entity(ds_client, "b")
    row.update(status="FAILED", error="set by hand")
    ds_client.put(row)
    summary = trigger(loader_url, retry_failed=True).json()
    assert summary["re_enqueued"] == {"retry_failed": 1}
    assert entity(ds_client, "b")["status"] == "PENDING"
    assert entity(ds_client, "a")["status"] == "SUCCESS"


def test_a_dry_run_leaves_the_digest_as_it_was(loader_url, sheets, ds_client):
    set_rows(sheets, ["a", "x", "en"])
    trigger(loader_url)
    finish(ds_client, "a")
    summary = trigger(loader_url, dry_run=True).json()
    assert summary["skipped"] == {"SUCCESS": 1}
    assert list(ds_client.query(kind="dify_batch_loader_digest").fetch()) == []


@pytest.mark.parametrize("status", ["SUCCESS", "FAILED"])
def test_finished_rows_are_skipped(loader_url, sheets, tasks, ds_client, status):
    set_rows(sheets, ["a", "x", "en"])
    trigger(loader_url)
    row = entity(ds_client, "a")
    row["status"] = status
    ds_client.put(row)
    tasks.clear()
    summary = trigger(loader_url).json()
    assert summary["skipped"] == {status: 1}
    assert tasks.created == []


# -- deliberate re-enqueues take a new generation ----------------------------------------------


def test_retry_failed_runs_failed_rows_again(loader_url, sheets, tasks, ds_client, namespace):
    set_rows(sheets, ["a", "x", "en"], ["b", "y", "en"])
    trigger(loader_url)
    for row_id, status in (("a", "FAILED"), ("b", "SUCCESS")):
        row = entity(ds_client, row_id)
        row.update(status=status, attempts=5, error="boom")
        ds_client.put(row)
    summary = trigger(loader_url, retry_failed=True).json()
    assert summary["re_enqueued"] == {"retry_failed": 1}
    assert summary["tasks_created"] == 1
    row = entity(ds_client, "a")
    assert (row["status"], row["generation"], row["attempts"]) == ("PENDING", 1, 0)
    assert task_name(namespace, "a", 1) in tasks.task_names()
    assert entity(ds_client, "b")["status"] == "SUCCESS"


def test_reprocess_changed_runs_rows_whose_inputs_changed(loader_url, sheets, ds_client, tasks):
    set_rows(sheets, ["a", "old", "en"], ["b", "same", "en"])
    trigger(loader_url)
    for row_id in ("a", "b"):
        row = entity(ds_client, row_id)
        row.update(status="SUCCESS", result='{"text": "old answer"}')
        ds_client.put(row)
    set_rows(sheets, ["a", "new", "en"], ["b", "same", "en"])
    assert trigger(loader_url).json()["skipped"] == {"SUCCESS": 2}  # not without the option
    summary = trigger(loader_url, reprocess_changed=True).json()
    assert summary["re_enqueued"] == {"reprocess_changed": 1}
    row = entity(ds_client, "a")
    assert row["status"] == "PENDING"
    assert json.loads(row["inputs"])["title"] == "new"
    assert row["result"] is None


def test_expired_leases_are_re_enqueued_live_ones_left(
    loader_url, sheets, ds_client, namespace, tasks
):
    set_rows(sheets, ["dead", "x", "en"], ["alive", "y", "en"])
    trigger(loader_url)
    now = datetime.now(UTC)
    for row_id, lease in (
        ("dead", now - timedelta(seconds=5)),
        ("alive", now + timedelta(hours=1)),
    ):
        row = entity(ds_client, row_id)
        row.update(status="PROCESSING", attempts=1, claim_id="w", lease_expires_at=lease)
        ds_client.put(row)
    summary = trigger(loader_url).json()
    assert summary["re_enqueued"] == {"expired_lease": 1}
    assert summary["skipped"] == {"PROCESSING": 1}
    dead = entity(ds_client, "dead")
    assert (dead["status"], dead["generation"], dead["claim_id"], dead["attempts"]) == (
        "PENDING",
        1,
        None,
        1,
    )
    assert task_name(namespace, "dead", 1) in tasks.task_names()


def test_a_pending_row_whose_task_is_gone_is_re_enqueued(
    loader_url, sheets, tasks, ds_client, namespace
):
    set_rows(sheets, ["a", "x", "en"], ["b", "y", "en"])
    trigger(loader_url)
    tasks.lose(task_name(namespace, "a"))  # the queue gave up on it; its name stays reserved
    summary = trigger(loader_url).json()
    assert summary["re_enqueued"] == {"lost_task": 1}
    assert summary["tasks_created"] == 1
    assert entity(ds_client, "a")["generation"] == 1
    assert task_name(namespace, "a", 1) in tasks.task_names()


def test_a_run_killed_between_its_writes_and_its_enqueues_is_repaired_by_the_next(
    loader_env, sheets, tasks, ds_client, namespace
):
    set_rows(sheets, *[[f"r{i}", f"title {i}", "en"] for i in range(40)])
    tasks.latency = 30  # every CreateTask hangs: the process dies before any task exists
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from shared.core.planning import LoadOptions; "
            "from shared.entrypoints.wiring import loader_service; "
            "loader_service().load(LoadOptions())",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        for _ in range(300):  # wait until its entities are written, then kill it hard
            if len(list(ds_client.query(kind=KIND).fetch())) == 40:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the loader never wrote its entities")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    tasks.latency = 0
    tasks.clear()  # the killed calls never reached the queue
    with serve_function("loader/main.py", "load_sheet") as url:
        summary = trigger(url).json()
    assert summary["re_enqueued"] == {"lost_task": 40}
    assert summary["tasks_created"] == 40
    assert len(tasks.task_names()) == 40
    assert {e["status"] for e in ds_client.query(kind=KIND).fetch()} == {"PENDING"}


# -- Cloud Tasks answers -------------------------------------------------------------------


def test_already_exists_counts_as_already_enqueued(loader_url, sheets, tasks, ds_client):
    set_rows(sheets, ["a", "x", "en"])
    tasks.fail_next(grpc.StatusCode.ALREADY_EXISTS)
    summary = trigger(loader_url).json()
    assert (summary["tasks_created"], summary["tasks_existing"], summary["errors"]) == (0, 1, [])


def test_unavailable_is_retried(loader_url, sheets, tasks):
    set_rows(sheets, ["a", "x", "en"])
    tasks.fail_next(grpc.StatusCode.UNAVAILABLE, times=2)
    summary = trigger(loader_url).json()
    assert summary["tasks_created"] == 1
    assert len(tasks.created) == 3


def test_a_task_that_cannot_be_created_is_reported_and_repaired_later(
    loader_url, sheets, tasks, ds_client
):
    set_rows(sheets, ["a", "x", "en"])
    tasks.fail_next(grpc.StatusCode.PERMISSION_DENIED, message="no cloudtasks.tasks.create")
    response = trigger(loader_url)
    assert response.status_code == 503
    assert response.json()["error_count"] == 1
    assert response.json()["errors"][0]["id"] == "a"
    assert "PermissionDenied" in response.json()["errors"][0]["error"]
    assert entity(ds_client, "a")["status"] == "PENDING"
    summary = trigger(loader_url).json()
    assert summary["re_enqueued"] == {"lost_task": 1}


# -- what the sheet holds ------------------------------------------------------------------


def test_the_summary_reports_invalid_duplicate_blank_and_padded_rows(loader_url, sheets, ds_client):
    set_rows(
        sheets, ["a", "first", "en"], ["", "no id", "en"], [], ["a", "second", "en"], ["short"]
    )
    summary = trigger(loader_url).json()
    assert (summary["rows_read"], summary["new"], summary["blank_rows"]) == (5, 2, 1)
    assert summary["invalid"] == [{"row_number": 3, "row_id": "", "reason": "the id cell is empty"}]
    assert summary["duplicate_ids"] == [{"row_id": "a", "row_number": 5, "first_row_number": 2}]
    assert json.loads(entity(ds_client, "a")["inputs"])["title"] == "first"
    assert json.loads(entity(ds_client, "short")["inputs"]) == {
        "id": "short",
        "title": "",
        "lang": "",
    }


def test_the_row_filter_limits_the_run_to_marked_rows(monkeypatch, loader_env, sheets, ds_client):
    monkeypatch.setenv("ROW_FILTER_COLUMN", "target")
    monkeypatch.setenv("ROW_FILTER_VALUE", "TRUE")
    set_rows(
        sheets,
        ["a", "x", "TRUE"],
        ["b", "y", "FALSE"],
        ["c", "z", ""],
        header=["id", "title", "target"],
    )
    with serve_function("loader/main.py", "load_sheet") as url:
        summary = trigger(url).json()
    assert (summary["new"], summary["filtered_out"]) == (1, 2)
    assert entity(ds_client, "b") is None


@pytest.mark.parametrize(("column", "expected"), [("title", "Hello"), ("ROW_NUMBER", "2")])
def test_the_id_column_can_be_a_header_or_the_row_number(
    monkeypatch, loader_env, sheets, ds_client, column, expected
):
    monkeypatch.setenv("UNIQUE_ID_COLUMN", column)
    set_rows(sheets, ["a", "Hello", "en"])
    with serve_function("loader/main.py", "load_sheet") as url:
        assert trigger(url).json()["new"] == 1
    assert entity(ds_client, expected)["status"] == "PENDING"


def test_large_sheets_are_read_in_chunks(loader_url, sheets):
    set_rows(sheets, *[[f"r{i}", "t", "en"] for i in range(120)])
    assert trigger(loader_url).json()["new"] == 120
    ranges = [r.rsplit("/", 1)[-1] for r in sheets.value_requests()]
    assert ranges == [
        f"'{SHEET.replace(chr(39), chr(39) * 2)}'!{a}"
        for a in ("1:1", "2:51", "52:101", "102:151", "152:201", "202:221")
    ]


def test_sheets_rate_limits_are_retried(loader_url, sheets):
    set_rows(sheets, ["a", "x", "en"])
    sheets.faults.append(429)
    assert trigger(loader_url).json()["new"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SHEET_NAME": "Nope"}, "no tab named 'Nope'"),
        ({"SPREADSHEET_ID": "missing"}, "check SPREADSHEET_ID"),
        ({"UNIQUE_ID_COLUMN": "uuid"}, "UNIQUE_ID_COLUMN 'uuid' is not a header"),
    ],
)
def test_sheet_problems_are_clear_errors_that_change_nothing(
    monkeypatch, loader_env, sheets, tasks, ds_client, change, message
):
    for name, value in change.items():
        monkeypatch.setenv(name, value)
    set_rows(sheets, ["a", "x", "en"])
    with serve_function("loader/main.py", "load_sheet") as url:
        response = trigger(url)
    assert response.status_code == 422
    assert message in response.json()["error"]
    assert list(ds_client.query(kind=KIND).fetch()) == []
    assert tasks.created == []


def test_a_bad_header_is_a_clear_error(loader_url, sheets, ds_client):
    set_rows(sheets, ["a", "x", "y"], header=["id", "", "lang"])
    response = trigger(loader_url)
    assert response.status_code == 422
    assert "header cell B1 is blank" in response.json()["error"]


# -- options -----------------------------------------------------------------------------------


def test_dry_run_reports_and_changes_nothing(loader_url, sheets, tasks, ds_client):
    set_rows(sheets, ["a", "x", "en"], ["b", "y", "en"])
    response = httpx.post(f"{loader_url}?dry_run=true", timeout=60)
    summary = response.json()
    assert (summary["dry_run"], summary["new"], summary["tasks_created"]) == (True, 2, 0)
    assert list(ds_client.query(kind=KIND).fetch()) == []
    assert tasks.created == []


@pytest.mark.parametrize("query", ["?dry_run=maybe", "?force=1"])
def test_bad_options_are_a_400(loader_url, query):
    response = httpx.post(f"{loader_url}{query}", timeout=60)
    assert response.status_code == 400
    assert "dry_run" in response.json()["error"]


def test_a_5000_row_sheet(monkeypatch, loader_env, sheets, tasks, ds_client):
    monkeypatch.setenv("SHEET_CHUNK_ROWS", "1000")
    set_rows(sheets, *[[f"row-{i:05d}", f"질문 {i}", "ko"] for i in range(5000)])
    with serve_function("loader/main.py", "load_sheet") as url:
        summary = trigger(url).json()
        assert (summary["rows_read"], summary["new"], summary["tasks_created"]) == (
            5000,
            5000,
            5000,
        )
        assert len(set(tasks.task_names())) == 5000
        again = trigger(url).json()
    assert (again["new"], again["tasks_created"], again["skipped"]) == (0, 0, {"PENDING": 5000})
    assert len(tasks.created) == 5000


def test_a_pending_row_edited_before_it_ran_runs_with_the_new_inputs(
    loader_url, sheets, tasks, ds_client
):
    set_rows(sheets, ["a", "draft", "en"])
    trigger(loader_url)
    set_rows(sheets, ["a", "final", "en"])
    summary = trigger(loader_url).json()
    assert (summary["inputs_updated"], summary["tasks_created"]) == (1, 0)
    assert json.loads(entity(ds_client, "a")["inputs"])["title"] == "final"
    assert len(tasks.task_names()) == 1  # the queued task stays; the worker reads the row


# -- hardening ------------------------------------------------------------------------------


def test_expired_claims_of_rows_that_left_the_sheet_or_its_filter_are_recovered(
    loader_url, sheets, ds_client, namespace, tasks
):
    set_rows(sheets, ["gone", "x", "en"], ["stays", "y", "en"])
    trigger(loader_url)
    row = entity(ds_client, "gone")
    row.update(
        status="PROCESSING",
        attempts=1,
        claim_id="dead-worker",
        lease_expires_at=datetime.now(UTC) - timedelta(seconds=5),
    )
    ds_client.put(row)
    set_rows(sheets, ["stays", "y", "en"])  # the owners removed the row meanwhile
    summary = trigger(loader_url).json()
    assert summary["re_enqueued"] == {"expired_lease": 1}
    gone = entity(ds_client, "gone")
    assert (gone["status"], gone["generation"], gone["claim_id"]) == ("PENDING", 1, None)
    assert task_name(namespace, "gone", 1) in tasks.task_names()


@pytest.mark.parametrize("query", ["?dry_run", "?dry_run=", "?dry_run=true"])
def test_a_dry_run_flag_without_a_value_is_a_dry_run(loader_url, sheets, tasks, ds_client, query):
    set_rows(sheets, ["a", "x", "en"])
    summary = httpx.post(f"{loader_url}{query}", timeout=60).json()
    assert (summary["dry_run"], summary["new"]) == (True, 1)
    assert list(ds_client.query(kind=KIND).fetch()) == []
    assert tasks.created == []


def test_options_that_disagree_between_query_and_body_are_a_400(loader_url, sheets, ds_client):
    set_rows(sheets, ["a", "x", "en"])
    response = httpx.post(f"{loader_url}?dry_run=true", json={"dry_run": False}, timeout=60)
    assert response.status_code == 400
    assert "dry_run" in response.json()["error"]
    assert list(ds_client.query(kind=KIND).fetch()) == []


@pytest.mark.parametrize(
    "raw", [b"[" * 100_000, b'{"dry_run": "\\ud800"}'], ids=["deep", "lone-surrogate"]
)
def test_hostile_loader_bodies_get_a_json_400(loader_url, raw):
    response = httpx.post(
        loader_url, content=raw, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert response.status_code == 400
    assert response.json()["error"]


def test_a_dry_run_with_resume_resumes_nothing(loader_url, sheets, tasks):
    tasks.paused.add(QUEUE)
    summary = trigger(loader_url, dry_run=True, resume=True).json()
    assert summary["queue"]["state"] == "PAUSED"
    assert summary["queue"]["would_resume"] is True
    assert tasks.calls_of("ResumeQueue") == []
    assert QUEUE in tasks.paused


def test_large_rows_are_committed_in_batches_by_size(
    monkeypatch, loader_env, sheets, tasks, ds_client
):
    """600 rows of ~21 KB each (7,000 Hangul characters): 12.6 MB, which one 500-entity commit
    could not carry (10 MiB in production, 4 MiB on the emulator)."""
    monkeypatch.setenv("SHEET_CHUNK_ROWS", "100")
    text = "가" * 7000
    set_rows(sheets, *[[f"big{i:03d}", text, "ko"] for i in range(600)])
    with serve_function("loader/main.py", "load_sheet") as url:
        response = trigger(url)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["new"], summary["tasks_created"], summary["error_count"]) == (600, 600, 0)
    assert entity(ds_client, "big599")["status"] == "PENDING"


def test_a_row_too_large_for_its_entity_is_reported_with_its_size(loader_url, sheets, ds_client):
    set_rows(sheets, ["huge", "x" * 600_000, "en"], ["fine", "y", "en"])
    summary = trigger(loader_url).json()
    assert summary["new"] == 1
    [invalid] = summary["invalid"]
    assert invalid["row_id"] == "huge"
    assert "600,0" in invalid["reason"]  # the size, in bytes
    assert entity(ds_client, "huge") is None


def test_broken_characters_make_invalid_rows_and_the_rest_runs(loader_url, sheets, ds_client):
    set_rows(
        sheets, ["ok", "fine", "en"], ["bad-cell", "cut \ud83d", "en"], ["\udc00id", "x", "en"]
    )
    response = trigger(loader_url)
    assert response.status_code == 200
    summary = response.json()
    assert summary["new"] == 1
    reasons = {i["row_number"]: i["reason"] for i in summary["invalid"]}
    assert "the cell under 'title'" in reasons[3]
    assert "the id holds a broken character" in reasons[4]
    assert entity(ds_client, "ok")["status"] == "PENDING"


def test_a_broken_character_in_a_header_is_a_clear_error(loader_url, sheets, ds_client):
    set_rows(sheets, ["a", "x", "en"], header=["id", "ti\ud800tle", "lang"])
    response = trigger(loader_url)
    assert response.status_code == 422
    assert "header cell B1" in response.json()["error"]
    assert list(ds_client.query(kind=KIND).fetch()) == []


def test_an_entity_edited_by_hand_is_reported_and_the_rest_runs(loader_url, sheets, ds_client):
    set_rows(sheets, ["edited", "x", "en"], ["other", "y", "en"])
    trigger(loader_url)
    row = entity(ds_client, "edited")
    row.update(status="pending")
    ds_client.put(row)
    set_rows(sheets, ["edited", "x", "en"], ["other", "y", "en"], ["new", "z", "en"])
    response = trigger(loader_url)
    assert response.status_code == 200
    summary = response.json()
    assert summary["new"] == 1
    [invalid] = summary["invalid"]
    assert invalid["row_id"] == "edited"
    assert "'pending' is not one of" in invalid["reason"]
