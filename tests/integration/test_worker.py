"""The worker over real HTTP: functions-framework serving worker/main.py, the real
google-cloud-datastore client against the emulator, the real httpx client against the
local Dify stand-in. Every row of the outcome table in the worker issue is here."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from local import dify_standin as dify
from local.cloud_tasks_standin import CloudTasksStandIn
from local.emulator import free_port
from local.secret_manager_standin import SecretManagerStandIn
from shared.adapters.dify import WorkflowClient
from shared.adapters.queue_control import PAUSE_KIND
from shared.adapters.secrets import ApiKey
from shared.adapters.store import StatusStore
from shared.core.errors import CapacityError
from shared.core.model import KIND, NewRow
from shared.entrypoints import wiring
from tests.conftest import PROJECT
from tests.support.proxy import FaultyProxy
from tests.support.servers import serve_function

pytestmark = pytest.mark.emulator
KEY = "app-test-key-5f1c"


@pytest.fixture
def dify_server() -> Iterator[dify.DifyStandIn]:
    server = dify.DifyStandIn(api_key=KEY).start()
    yield server
    server.stop()


@pytest.fixture
def worker_env(monkeypatch, namespace, dify_server):
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "DATASTORE_NAMESPACE": namespace,
        "DIFY_API_ENDPOINT": dify_server.url,
        "DIFY_API_KEY": KEY,
        "DIFY_API_TIMEOUT_MINUTES": "0.05",  # 3 s: the timeout cases stay short
        "MAX_ATTEMPTS": "3",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def worker_url(worker_env) -> Iterator[str]:
    with serve_function("worker/main.py", "process_row") as url:
        yield url


@pytest.fixture
def secret_key(monkeypatch, worker_env) -> Iterator[SecretManagerStandIn]:
    """The worker reads its key from a Secret Manager stand-in (secret `dify-api-key`, empty
    until a test puts a value in), as when deployed."""
    secrets = SecretManagerStandIn({}).start()
    monkeypatch.delenv("DIFY_API_KEY")
    monkeypatch.setenv("DIFY_API_KEY_SECRET_ID", "dify-api-key")
    monkeypatch.setenv("SECRET_MANAGER_EMULATOR_HOST", secrets.host)
    yield secrets
    secrets.stop()


def add_row(store: StatusStore, row_id: str = "row-1", inputs: dict | None = None) -> None:
    store.insert_new([NewRow(row_id, inputs or {"topic": "cats"}, "hash", 2)])


def deliver(url: str, body: object = None, raw: bytes | None = None) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body or {"id": "row-1"}).encode()
    return httpx.post(
        url, content=content, headers={"Content-Type": "application/json"}, timeout=30
    )


def entity(ds_client, row_id: str = "row-1"):
    return ds_client.get(ds_client.key(KIND, row_id))


# -- success -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
@pytest.mark.parametrize("status", ["succeeded", "partial-succeeded"])
def test_a_succeeded_run_is_recorded_with_its_outputs(
    monkeypatch, worker_env, store, ds_client, dify_server, mode, status
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", mode)
    add_row(store)
    dify_server.script(dify.finish({"answer": "42"}, status=status))
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
    assert response.status_code == 200
    assert response.json()["outcome"] == "succeeded"
    row = entity(ds_client)
    assert row["status"] == "SUCCESS"
    assert json.loads(row["result"]) == {"answer": "42"}
    assert row["attempts"] == 1
    assert row["workflow_run_id"]
    assert row["total_tokens"] == 123
    assert row["elapsed_time"] == pytest.approx(0.42)
    assert row["error"] is None
    assert row["lease_expires_at"] is None
    call = dify_server.run_calls()[0]
    assert call.body == {
        "inputs": {"topic": "cats"},
        "response_mode": mode,
        "user": "dify-batch-processor",
    }
    assert call.authorization == f"Bearer {KEY}"


def test_korean_and_emoji_round_trip_unchanged(worker_url, store, ds_client, dify_server):
    inputs = {"제목": "고양이는 왜 상자를 좋아할까? 🐱📦", "note": "naïve — ü"}
    add_row(store, "행-1", inputs)
    assert deliver(worker_url, {"id": "행-1"}).status_code == 200
    row = entity(ds_client, "행-1")
    assert row["status"] == "SUCCESS"
    assert dify_server.run_calls()[0].body["inputs"] == inputs
    assert json.loads(row["result"])["inputs"] == inputs
    assert "고양이는 왜 상자를 좋아할까? 🐱📦" in row["result"]  # stored as text, not \\u escapes


# -- permanent failures: FAILED, 200, never retried -------------------------------------------

PERMANENT = [
    dify.http_error(400, "invalid_param", "question is required in input form"),
    dify.http_error(400, "completion_request_error", "node 3 raised ValueError"),
    dify.finish(status="failed", error="LLM node exploded"),
    dify.finish(status="stopped", error="stopped by user"),
    dify.human_input(),
]


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
@pytest.mark.parametrize("reply", PERMANENT, ids=lambda r: r.name)
def test_permanent_failures_are_recorded_and_not_retried(
    monkeypatch, worker_env, store, ds_client, dify_server, reply, mode
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", mode)
    add_row(store)
    dify_server.script(reply)
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
        assert response.status_code == 200
        assert response.json()["outcome"] == "failed"
        row = entity(ds_client)
        assert row["status"] == "FAILED"
        assert row["attempts"] == 1
        assert row["error"]
        # A second delivery of the same task changes nothing and calls Dify no more.
        assert deliver(url).json()["outcome"] == "duplicate"
    assert len(dify_server.run_calls()) == 1
    assert entity(ds_client)["error"] == row["error"]


def test_a_failed_error_keeps_difys_code_and_message(worker_url, store, ds_client, dify_server):
    add_row(store)
    dify_server.script(dify.http_error(400, "invalid_param", "grade must be one of 1, 2"))
    deliver(worker_url)
    assert entity(ds_client)["error"] == (
        "invalid_param: Dify answered HTTP 400: grade must be one of 1, 2"
    )


def test_a_stream_error_event_is_classified_like_its_status(
    monkeypatch, worker_env, store, ds_client, dify_server
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", "streaming")
    add_row(store, "a")
    add_row(store, "b")
    dify_server.script(
        dify.stream_error("invalid_param", "bad input", 400),
        dify.stream_error("internal_server_error", "boom", 500),
    )
    with serve_function("worker/main.py", "process_row") as url:
        assert deliver(url, {"id": "a"}).status_code == 200
        assert deliver(url, {"id": "b"}).status_code == 500
    assert entity(ds_client, "a")["status"] == "FAILED"
    assert entity(ds_client, "b")["status"] == "PENDING"


# -- the row's own transient failures: charged, back to PENDING, 500 (this task alone) -------

ROW_TRANSIENT = [
    dify.http_error(500, "internal_server_error", "boom"),
    dify.not_json(),
    dify.cut_off(),
    dify.hang(6),
    dify.upstream_error("rate_limit"),
    dify.upstream_error("connection"),
    dify.upstream_error("unavailable", via="run"),
]


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
@pytest.mark.parametrize("reply", ROW_TRANSIENT, ids=lambda r: r.name)
def test_a_rows_own_transient_failure_is_charged_and_answered_500(
    monkeypatch, worker_env, store, ds_client, dify_server, reply, mode
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", mode)
    add_row(store)
    dify_server.script(reply)
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
        assert response.status_code == 500
        assert response.json()["outcome"] == "retry"
        row = entity(ds_client)
        assert row["status"] == "PENDING"
        assert row["attempts"] == 1
        assert row["error"]
        assert row["lease_expires_at"] is None
        # The retry Cloud Tasks sends runs the workflow again and can succeed.
        assert deliver(url).status_code == 200
        done = entity(ds_client)
        assert (done["status"], done["error"]) == ("SUCCESS", None)
        assert done["last_error"] == row["error"]  # why it needed a second attempt
    row = entity(ds_client)
    assert row["status"] == "SUCCESS"
    assert row["attempts"] == 2
    assert len(dify_server.run_calls()) == 2


# -- Dify at capacity: no run started, not charged, 429/503 so the whole queue slows --------

CAPACITY = [
    dify.concurrency_limit(400),
    dify.concurrency_limit(429),
    dify.http_error(429, "", "", html=True),
    dify.http_error(502, "", "bad gateway", html=True),
    dify.http_error(503, "", "unavailable"),
    dify.http_error(524, "", "a timeout occurred", html=True),
]


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
@pytest.mark.parametrize("reply", CAPACITY, ids=lambda r: r.name)
def test_dify_at_capacity_charges_no_attempt_and_slows_the_queue(
    monkeypatch, worker_env, store, ds_client, dify_server, reply, mode
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", mode)
    add_row(store)
    dify_server.script(reply, reply)
    with serve_function("worker/main.py", "process_row") as url:
        for _ in range(2):
            response = deliver(url)
            assert (response.status_code, response.json()["outcome"]) == (503, "dify_busy")
            row = entity(ds_client)
            assert (row["status"], row["attempts"]) == ("PENDING", 0)
            assert row["error"]
        assert deliver(url).status_code == 200
    row = entity(ds_client)
    assert (row["status"], row["attempts"]) == ("SUCCESS", 1)


def test_the_concurrency_refusal_of_a_real_limit_is_not_charged(
    worker_url, store, ds_client, dify_server
):
    """The stand-in enforces max_active_requests like Dify: the third of three rows at once
    with a limit of 2 is refused with the 400 form, and keeps its attempt."""
    dify_server.max_active_requests = 2
    dify_server.latency = 1.0
    for row_id in ("a", "b", "c"):
        add_row(store, row_id)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda i: deliver(worker_url, {"id": i}), ["a", "b", "c"]))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 503]
    assert dify_server.refused == 1
    refused = next(a.json()["id"] for a in answers if a.status_code == 503)
    row = entity(ds_client, refused)
    assert (row["status"], row["attempts"]) == ("PENDING", 0)
    assert "maximum concurrent requests" in row["error"]


def test_429_with_retry_after_is_passed_on(worker_url, store, ds_client, dify_server):
    add_row(store)
    dify_server.script(
        dify.http_error(429, "too_many_requests", "Too many requests", retry_after="37")
    )
    response = deliver(worker_url)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "37"
    assert entity(ds_client)["status"] == "PENDING"


def test_a_connection_error_is_retried(monkeypatch, worker_env, store, ds_client):
    monkeypatch.setenv("DIFY_API_ENDPOINT", f"http://127.0.0.1:{free_port()}/v1/workflows/run")
    add_row(store)
    with serve_function("worker/main.py", "process_row") as url:
        assert deliver(url).status_code == 500
    row = entity(ds_client)
    assert row["status"] == "PENDING"
    assert row["error"].startswith("connection_error:")


def test_a_stream_of_pings_is_cut_at_the_timeout_and_the_dify_task_stopped(
    monkeypatch, worker_env, store, ds_client, dify_server
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", "streaming")
    add_row(store)
    dify_server.script(dify.hang(30))
    with serve_function("worker/main.py", "process_row") as url:
        assert deliver(url).status_code == 500
    row = entity(ds_client)
    assert row["error"].startswith("timeout:")
    assert row["workflow_run_id"] == "r-hang"
    stops = dify_server.stop_calls()
    assert [c.path for c in stops] == ["/v1/workflows/tasks/t-hang/stop"]
    assert stops[0].body == {"user": "dify-batch-processor"}  # Dify refuses a stop without it
    assert dify_server.stopped_runs == {"r-hang"}


def test_a_transient_failure_at_the_last_attempt_fails_the_row(
    monkeypatch, worker_env, store, ds_client, dify_server
):
    monkeypatch.setenv("MAX_ATTEMPTS", "2")
    add_row(store)
    dify_server.script(
        dify.http_error(500, "internal_server_error", "boom"),
        dify.http_error(500, "bad_gateway", "still down"),
    )
    with serve_function("worker/main.py", "process_row") as url:
        assert deliver(url).status_code == 500
        response = deliver(url)
    assert response.status_code == 200
    assert response.json()["outcome"] == "failed"
    row = entity(ds_client)
    assert row["status"] == "FAILED"
    assert row["attempts"] == 2
    assert (
        row["error"] == "gave up after 2 attempts (MAX_ATTEMPTS): bad_gateway: "
        "Dify answered HTTP 500: still down"
    )


def test_a_row_past_max_attempts_is_failed_without_calling_dify(
    worker_url, store, ds_client, dify_server
):
    add_row(store)
    row = entity(ds_client)
    row.update(attempts=3, error="timeout: no answer", status="PENDING")
    ds_client.put(row)
    response = deliver(worker_url)
    assert response.status_code == 200
    row = entity(ds_client)
    assert row["status"] == "FAILED"
    assert "all 3 attempts" in row["error"]
    assert "timeout: no answer" in row["error"]
    assert dify_server.run_calls() == []


# -- duplicates, missing rows, bad bodies ---------------------------------------------------


@pytest.mark.parametrize("status", ["SUCCESS", "FAILED"])
def test_a_finished_row_is_left_alone(worker_url, store, ds_client, dify_server, status):
    add_row(store)
    row = entity(ds_client)
    row.update(status=status, result='{"kept": true}', attempts=1)
    ds_client.put(row)
    response = deliver(worker_url)
    assert (response.status_code, response.json()["outcome"]) == (200, "duplicate")
    assert entity(ds_client)["result"] == '{"kept": true}'
    assert dify_server.run_calls() == []


def test_a_row_under_a_live_claim_is_left_alone(worker_url, store, ds_client, dify_server):
    add_row(store)
    row = entity(ds_client)
    lease = datetime.now(UTC) + timedelta(minutes=5)
    row.update(status="PROCESSING", attempts=1, claim_id="someone", lease_expires_at=lease)
    ds_client.put(row)
    response = deliver(worker_url)
    # The task is kept (500: retried with backoff, the queue not slowed), so that if the
    # claim's holder died, this task finishes the row once the lease has passed.
    assert (response.status_code, response.json()["outcome"]) == (500, "busy")
    assert entity(ds_client)["claim_id"] == "someone"
    assert dify_server.run_calls() == []


def test_a_row_whose_claim_expired_is_taken_over(worker_url, store, ds_client, dify_server):
    add_row(store)
    row = entity(ds_client)
    lease = datetime.now(UTC) - timedelta(seconds=1)
    row.update(status="PROCESSING", attempts=1, claim_id="dead-worker", lease_expires_at=lease)
    ds_client.put(row)
    assert deliver(worker_url).json()["outcome"] == "succeeded"
    row = entity(ds_client)
    assert (row["status"], row["attempts"]) == ("SUCCESS", 2)


def test_an_unknown_id_changes_nothing_and_is_logged_as_an_error(
    worker_url, ds_client, dify_server, capsys
):
    response = deliver(worker_url, {"id": "nobody"})
    assert (response.status_code, response.json()["outcome"]) == (200, "missing")
    assert entity(ds_client, "nobody") is None
    assert dify_server.run_calls() == []
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert any(x["severity"] == "ERROR" and x.get("row_id") == "nobody" for x in lines)


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b"{}", b'{"id": ""}', b'{"id": null}', b'{"row": "row-1"}']
)
def test_a_bad_body_is_a_400_that_writes_nothing(worker_url, store, ds_client, raw, dify_server):
    add_row(store)
    before = dict(entity(ds_client))
    response = deliver(worker_url, raw=raw)
    assert response.status_code == 400
    assert "id" in response.json()["error"]
    assert dict(entity(ds_client)) == before
    assert dify_server.run_calls() == []


# -- races, sizes, secrets --------------------------------------------------------------------


def test_concurrent_deliveries_of_one_task_run_the_workflow_once(
    monkeypatch, worker_env, store, ds_client, dify_server
):
    dify_server.latency = 0.5  # every delivery arrives while the first is still running
    add_row(store)
    with serve_function("worker/main.py", "process_row") as url:
        barrier = threading.Barrier(12)
        answers: list[httpx.Response] = []

        def one() -> None:
            barrier.wait()
            answers.append(deliver(url))

        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outcomes = sorted((a.json()["outcome"], a.status_code) for a in answers)
        assert outcomes == [("busy", 500)] * 11 + [("succeeded", 200)]
        # Their retries find the row finished and end.
        retry = deliver(url)
        assert (retry.status_code, retry.json()["outcome"]) == (200, "duplicate")
    assert len(dify_server.run_calls()) == 1
    row = entity(ds_client)
    assert (row["status"], row["attempts"]) == ("SUCCESS", 1)


def test_a_large_output_is_stored_whole(worker_url, store, ds_client, dify_server):
    text = "긴 답변 🐱 " * 25_000  # ~300 KB of UTF-8: far past the 1,500-byte index limit
    add_row(store)
    dify_server.script(dify.finish({"text": text}))
    assert deliver(worker_url).json()["outcome"] == "succeeded"
    assert json.loads(entity(ds_client)["result"]) == {"text": text}


def test_an_output_over_the_entity_limit_is_failed_with_an_explanation(
    worker_url, store, ds_client, dify_server
):
    add_row(store)
    dify_server.script(dify.finish({"text": "가" * 400_000}))  # 1.2 MB of UTF-8
    response = deliver(worker_url)
    assert response.status_code == 200
    row = entity(ds_client)
    assert row["status"] == "FAILED"
    assert row["error"].startswith("output_too_large:")
    assert row["workflow_run_id"] in row["error"]  # says where the full output lives
    assert row["result"] is None
    assert len(dify_server.run_calls()) == 1


def test_an_answer_over_the_response_cap_is_refused_unread(
    monkeypatch, worker_env, store, ds_client, dify_server
):
    monkeypatch.setenv("DIFY_MAX_RESPONSE_BYTES", "100000")
    add_row(store)
    dify_server.script(dify.finish({"text": "x" * 200_000}))
    with serve_function("worker/main.py", "process_row") as url:
        assert deliver(url).status_code == 200
    row = entity(ds_client)
    assert row["status"] == "FAILED"
    assert row["error"].startswith("response_too_large:")


def test_the_key_comes_from_secret_manager_and_never_leaks(
    secret_key, store, ds_client, dify_server, capsys
):
    secrets = secret_key
    secrets.secrets["dify-api-key"] = KEY
    add_row(store, "ok")
    add_row(store, "denied")
    dify_server.script(dify.finish({"a": 1}), dify.http_error(401, "unauthorized", "nope"))
    with serve_function("worker/main.py", "process_row") as url:
        assert deliver(url, {"id": "ok"}).status_code == 200
        assert deliver(url, {"id": "denied"}).status_code == 503  # app-wide: not failed
    assert secrets.accessed == [f"projects/{PROJECT}/secrets/dify-api-key/versions/latest"]
    assert dify_server.run_calls()[0].authorization == f"Bearer {KEY}"
    assert entity(ds_client, "ok")["status"] == "SUCCESS"
    out = capsys.readouterr().out
    assert "row_outcome" in out
    assert KEY not in out
    for row_id in ("ok", "denied"):
        assert KEY not in json.dumps(dict(entity(ds_client, row_id)), default=str)


def test_a_missing_secret_is_a_clear_error(secret_key, store):
    add_row(store)  # the secret `dify-api-key` has no value: it does not exist
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
    assert response.status_code == 500
    assert "DIFY_API_KEY_SECRET_ID" in response.json()["error"]
    assert "secretAccessor" in response.json()["error"]


def test_missing_settings_name_the_variable(monkeypatch, worker_env, capsys):
    monkeypatch.delenv("DIFY_API_ENDPOINT")
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
    assert response.status_code == 500
    assert "DIFY_API_ENDPOINT is not set" in response.json()["error"]
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    logged = [x for x in lines if x.get("event") == "config_error"]
    assert logged[0]["severity"] == "ERROR"
    assert "DIFY_API_ENDPOINT is not set" in logged[0]["message"]


def test_one_log_line_per_outcome_with_id_attempt_and_duration(worker_url, store, capsys):
    add_row(store)
    deliver(worker_url)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    outcome_lines = [x for x in lines if x.get("event") == "row_outcome"]
    assert len(outcome_lines) == 1
    line = outcome_lines[0]
    assert (line["severity"], line["row_id"], line["outcome"], line["attempt"]) == (
        "INFO",
        "row-1",
        "succeeded",
        1,
    )
    assert isinstance(line["duration_s"], float)


# -- what Dify's server really does: pauses, lost streams, run ids ---------------------------


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
def test_a_workflow_waiting_for_human_input_fails_once_with_the_reason(
    monkeypatch, worker_env, store, ds_client, dify_server, mode
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", mode)
    add_row(store)
    dify_server.script(dify.human_input())
    with serve_function("worker/main.py", "process_row") as url:
        assert deliver(url).json()["outcome"] == "failed"
        assert deliver(url).json()["outcome"] == "duplicate"
    row = entity(ds_client)
    assert row["status"] == "FAILED"
    assert row["error"].startswith("workflow_paused:")
    assert "human-input" in row["error"]
    assert dify_server.run_detail(row["workflow_run_id"])["status"] == "paused"
    assert len(dify_server.run_calls()) == 1


def test_a_stream_lost_after_workflow_started_is_looked_up_not_run_again(
    monkeypatch, worker_env, store, ds_client, dify_server
):
    add_row(store)
    dify_server.script(dify.lost_stream({"answer": "finished on the server"}, finishes_after=1.5))
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
    assert (response.status_code, response.json()["outcome"]) == (200, "succeeded")
    row = entity(ds_client)
    assert (row["status"], row["attempts"]) == ("SUCCESS", 1)
    assert json.loads(row["result"]) == {"answer": "finished on the server"}
    assert len(dify_server.run_calls()) == 1  # no second run, no tokens spent twice
    lookups = dify_server.lookup_calls()
    assert len(lookups) >= 2  # it was still running at the first look
    assert {c.path for c in lookups} == {f"/v1/workflows/run/{row['workflow_run_id']}"}


def test_a_lost_run_that_failed_is_classified_from_the_lookup(
    worker_url, store, ds_client, dify_server
):
    add_row(store)
    dify_server.script(dify.lost_stream(status="failed", error="code node: KeyError"))
    assert deliver(worker_url).json()["outcome"] == "failed"
    row = entity(ds_client)
    assert row["error"] == "workflow_failed: workflow failed: code node: KeyError"
    assert row["workflow_run_id"]
    assert len(dify_server.run_calls()) == 1


def test_a_lost_run_still_running_at_the_timeout_is_stopped_and_retried(
    worker_url, store, ds_client, dify_server
):
    add_row(store)
    dify_server.script(dify.lost_stream(finishes_after=60))  # past the 3 s timeout
    response = deliver(worker_url)
    assert response.status_code == 500
    row = entity(ds_client)
    assert (row["status"], row["attempts"]) == ("PENDING", 1)
    assert row["error"].startswith("timeout:")
    assert dify_server.stopped_runs == {row["workflow_run_id"]}
    assert [c.body for c in dify_server.stop_calls()] == [{"user": "dify-batch-processor"}]


def test_a_failed_row_keeps_its_run_id(worker_url, store, ds_client, dify_server):
    add_row(store)
    dify_server.script(dify.finish(status="failed", error="LLM node exploded"))
    deliver(worker_url)
    row = entity(ds_client)
    assert row["status"] == "FAILED"
    assert dify_server.run_detail(row["workflow_run_id"])["status"] == "failed"


def test_a_retried_row_keeps_the_run_id_of_its_failed_attempt(
    worker_url, store, ds_client, dify_server
):
    add_row(store)
    dify_server.script(dify.upstream_error("rate_limit", via="run"))
    assert deliver(worker_url).status_code == 500
    row = entity(ds_client)
    assert row["status"] == "PENDING"
    assert dify_server.run_detail(row["workflow_run_id"])["status"] == "failed"


# -- app-wide failures pause the queue instead of failing every row -------------------------


@pytest.fixture
def tasks_queue(monkeypatch, worker_env) -> Iterator[CloudTasksStandIn]:
    queue = CloudTasksStandIn().start()
    monkeypatch.setenv("TASKS_LOCATION", "asia-northeast3")
    monkeypatch.setenv("TASKS_QUEUE", "rows")
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", queue.host)
    yield queue
    queue.stop()


QUEUE = f"projects/{PROJECT}/locations/asia-northeast3/queues/rows"
APP_WIDE = [
    dify.http_error(401, "unauthorized", "Access token is invalid"),
    dify.http_error(403, "forbidden", "app is disabled"),
    dify.http_error(404, "not_found", "app not found"),
    dify.http_error(400, "app_unavailable", "App unavailable"),
    dify.http_error(400, "provider_not_initialize", "no credentials"),
    dify.http_error(400, "provider_quota_exceeded", "quota used up"),
    dify.quota_exceeded(),
]


@pytest.mark.parametrize("reply", APP_WIDE, ids=lambda r: r.name)
def test_an_app_wide_failure_pauses_the_queue_and_charges_nothing(
    tasks_queue, store, ds_client, dify_server, reply, capsys
):
    add_row(store)
    dify_server.script(reply)
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
    assert (response.status_code, response.json()["outcome"]) == (503, "paused")
    row = entity(ds_client)
    assert (row["status"], row["attempts"]) == ("PENDING", 0)
    assert row["error"]
    assert tasks_queue.calls_of("PauseQueue") == [QUEUE]
    note = ds_client.get(ds_client.key(PAUSE_KIND, QUEUE))
    assert note["reason"].startswith(row["error"])
    assert ". To do: " in note["reason"]  # what the operator reads says what to change
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    paused = [x for x in lines if x.get("event") == "batch_paused"]
    assert len(paused) == 1
    assert paused[0]["severity"] == "ERROR"
    assert "resume=true" in paused[0]["message"]
    assert "gcloud tasks queues resume rows --location asia-northeast3" in paused[0]["message"]
    assert KEY not in json.dumps(lines)


def test_without_queue_settings_an_app_wide_failure_still_charges_nothing(
    worker_url, store, ds_client, dify_server
):
    add_row(store)
    dify_server.script(dify.http_error(401, "unauthorized", "Access token is invalid"))
    response = deliver(worker_url)
    assert (response.status_code, response.json()["outcome"]) == (503, "paused")
    assert (entity(ds_client)["status"], entity(ds_client)["attempts"]) == ("PENDING", 0)


def test_after_a_401_the_key_is_read_again_from_secret_manager(
    secret_key, store, ds_client, dify_server
):
    secrets = secret_key
    secrets.secrets["dify-api-key"] = "app-old-rotated-key"
    add_row(store)
    with serve_function("worker/main.py", "process_row") as url:
        assert deliver(url).status_code == 503
        secrets.secrets["dify-api-key"] = KEY  # the operator puts the current key in
        assert deliver(url).status_code == 200
    assert len(secrets.accessed) == 2
    assert [c.authorization for c in dify_server.run_calls()] == [
        "Bearer app-old-rotated-key",
        f"Bearer {KEY}",
    ]
    row = entity(ds_client)
    assert (row["status"], row["attempts"]) == ("SUCCESS", 1)


# -- hardening: no key leaked, no row stuck, no run paid twice --------------------------------


def test_a_key_with_a_control_character_in_secret_manager_is_refused_by_name(
    secret_key, store, ds_client, dify_server, capsys
):
    secret_key.secrets["dify-api-key"] = "app-pasted\r\nkey-0123456789"
    add_row(store)
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
    assert response.status_code == 500
    error = response.json()["error"]
    assert "dify-api-key (DIFY_API_KEY_SECRET_ID)" in error
    assert "line break" in error
    for part in ("app-pasted", "key-0123456789"):
        assert part not in error
        assert part not in capsys.readouterr().out
        assert part not in json.dumps(dict(entity(ds_client)), default=str)
    assert dify_server.run_calls() == []


def test_an_answer_that_echoes_the_key_is_scrubbed_everywhere(
    worker_url, store, ds_client, dify_server, capsys
):
    """Whatever produced the text (here a hostile server quoting the header back), the key never
    reaches the stored row, the log or the answer."""
    add_row(store, "a")
    add_row(store, "b")
    dify_server.script(
        dify.http_error(400, "invalid_param", f"bad header Authorization: Bearer {KEY}"),
        dify.finish(status="failed", error=f"node saw key {KEY}"),
    )
    answers = [deliver(worker_url, {"id": i}) for i in ("a", "b")]
    out = capsys.readouterr().out
    for row_id, answer in zip(("a", "b"), answers, strict=True):
        stored = json.dumps(dict(entity(ds_client, row_id)), default=str)
        assert "[redacted]" in stored
        assert KEY not in stored
        assert KEY not in answer.text
    assert KEY not in out
    assert "[redacted]" in out


def test_a_result_is_written_after_datastore_comes_back_within_the_lease(
    monkeypatch, worker_env, emulator_host, store, ds_client, dify_server
):
    """Datastore drops out while the run finishes: the write is retried within the lease,
    and the run is recorded once, not lost and not repeated."""
    proxy = FaultyProxy(emulator_host)
    monkeypatch.setenv("DATASTORE_EMULATOR_HOST", proxy.host)

    def outage_during_run(h, body):
        proxy.cut()
        threading.Timer(2.0, proxy.restore).start()
        dify.finish({"answer": "kept"}).write(h, body)

    add_row(store)
    dify_server.script(dify.Reply(outage_during_run, "outage"))
    try:
        with serve_function("worker/main.py", "process_row") as url:
            response = deliver(url)
    finally:
        proxy.stop()
    assert (response.status_code, response.json()["outcome"]) == (200, "succeeded")
    row = entity(ds_client)
    assert (row["status"], row["attempts"]) == ("SUCCESS", 1)
    assert json.loads(row["result"]) == {"answer": "kept"}
    assert len(dify_server.run_calls()) == 1


def test_a_trickling_blocking_answer_is_cut_at_the_deadline(
    monkeypatch, worker_env, store, ds_client, dify_server
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", "blocking")
    add_row(store)
    dify_server.script(dify.trickle(30))  # a byte every 0.25 s: no single read times out
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
    assert response.status_code == 500
    assert entity(ds_client)["error"].startswith("timeout:")
    wait_until(lambda: dify_server.trickle_cut)  # the worker left long before the 30 s


@pytest.mark.parametrize(
    ("chunks", "text"),
    [(2000, "토큰 " * 20), (1, "긴 " * 30_000)],
    ids=["many-small", "one-large"],
)
def test_progress_events_do_not_count_against_the_size_cap(
    monkeypatch, worker_env, store, ds_client, dify_server, chunks, text
):
    monkeypatch.setenv("DIFY_MAX_RESPONSE_BYTES", "20000")
    add_row(store)
    # 200 KB of text chunks, or one 120 KB chunk: past the cap, yet the outputs are small.
    dify_server.script(dify.chatty(chunks, text, {"answer": "short"}))
    with serve_function("worker/main.py", "process_row") as url:
        assert deliver(url).json()["outcome"] == "succeeded"
    assert json.loads(entity(ds_client)["result"]) == {"answer": "short"}


def test_a_final_event_over_the_cap_fails_the_row_and_stops_the_run(
    monkeypatch, worker_env, store, ds_client, dify_server
):
    monkeypatch.setenv("DIFY_MAX_RESPONSE_BYTES", "20000")
    add_row(store)
    dify_server.script(dify.finish({"text": "x" * 50_000}))
    with serve_function("worker/main.py", "process_row") as url:
        assert deliver(url).status_code == 200
    row = entity(ds_client)
    assert (row["status"], row["attempts"]) == ("FAILED", 1)
    assert row["error"].startswith("response_too_large:")
    assert len(dify_server.stop_calls()) == 1


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
def test_values_datastore_cannot_take_are_stored_as_best_they_can(
    monkeypatch, worker_env, store, ds_client, dify_server, mode
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", mode)
    add_row(store)
    # Half an emoji from a code node, NaN tokens, an elapsed time past any float.
    dify_server.script(
        dify.finish_raw(
            '{"status": "succeeded", "outputs": {"text": "cut \\ud83d emoji"}, '
            '"total_tokens": NaN, "elapsed_time": 1e400}'
        )
    )
    with serve_function("worker/main.py", "process_row") as url:
        assert deliver(url).json()["outcome"] == "succeeded"
    row = entity(ds_client)
    assert json.loads(row["result"]) == {"text": "cut \ufffd emoji"}
    assert (row["total_tokens"], row["elapsed_time"]) == (None, None)
    assert len(dify_server.run_calls()) == 1


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
def test_json_nested_too_deep_fails_once_instead_of_rerunning(
    monkeypatch, worker_env, store, ds_client, dify_server, mode
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", mode)
    add_row(store)
    deep = "[" * 100_000 + "]" * 100_000
    dify_server.script(dify.finish_raw(f'{{"status": "succeeded", "outputs": {{"x": {deep}}}}}'))
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
    assert (response.status_code, response.json()["outcome"]) == (200, "failed")
    assert entity(ds_client)["error"].startswith("malformed:")
    assert len(dify_server.run_calls()) == 1


@pytest.mark.parametrize(
    ("header", "answered"), [("²", None), ("999999999999999999999999", "3600")]
)
def test_a_strange_retry_after_is_ignored_or_capped(
    worker_url, store, ds_client, dify_server, header, answered
):
    add_row(store)
    dify_server.script(dify.http_error(429, "too_many_requests", "slow", retry_after=header))
    response = deliver(worker_url)
    assert response.status_code == (429 if answered else 503)
    assert response.headers.get("Retry-After") == answered
    assert entity(ds_client)["status"] == "PENDING"


def test_an_entity_edited_by_hand_is_left_alone_with_the_reason(
    worker_url, store, ds_client, dify_server
):
    add_row(store)
    row = entity(ds_client)
    row.update(status="pending")
    ds_client.put(row)
    response = deliver(worker_url)
    assert (response.status_code, response.json()["outcome"]) == (200, "missing")
    assert "'pending' is not one of PENDING" in response.json()["detail"]
    assert dify_server.run_calls() == []


@pytest.mark.parametrize(
    "raw",
    [b'{"id": "\\ud800"}', b'{"id": ' + b"[" * 5000 + b"]" * 5000 + b"}", b"[" * 100_000],
    ids=["lone-surrogate", "deep-id", "deep-body"],
)
def test_hostile_bodies_get_a_json_400(worker_url, store, dify_server, raw):
    response = deliver(worker_url, raw=raw)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]


def test_waiting_for_a_local_connection_is_not_charged(dify_server):
    """With every pooled connection busy, a call fails as 'Dify busy' (uncharged), not as the
    row's own timeout."""
    dify_server.script(dify.hang(2))
    client = WorkflowClient(
        http=httpx.Client(limits=httpx.Limits(max_connections=1)),
        endpoint=dify_server.url,
        api_key=ApiKey(read=lambda: KEY),
        response_mode="blocking",
        user="u",
        timeout_s=10,
        max_response_bytes=10**6,
        pool_timeout_s=0.2,
    )
    holder = threading.Thread(target=client.run, args=({"a": 1},))
    holder.start()
    wait_until(lambda: dify_server.in_flight == 1)
    with pytest.raises(CapacityError) as caught:
        client.run({"b": 2})
    holder.join()
    assert caught.value.code == "connections_busy"


def test_the_pool_has_a_connection_for_every_thread(monkeypatch):
    pool = wiring.http_client(100)
    assert pool._transport._pool._max_connections >= 100


def wait_until(predicate, seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.05)


# -- what Dify's own server revealed (issue #17; tests/dify_server has them against it) ------


def test_a_403_without_difys_json_fails_only_its_row(tasks_queue, store, ds_client, dify_server):
    add_row(store)
    dify_server.script(dify.http_error(403, "", "", html=True))  # a firewall's own page
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
    assert (response.status_code, response.json()["outcome"]) == (200, "failed")
    row = entity(ds_client)
    assert row["status"] == "FAILED"
    assert row["error"].startswith("forbidden_by_proxy:")
    assert tasks_queue.calls_of("PauseQueue") == []


@pytest.mark.parametrize("kind", ["credentials", "quota"])
@pytest.mark.parametrize("via", ["http", "run"])
def test_a_failure_known_from_a_runs_text_pauses_only_when_a_second_row_meets_it(
    tasks_queue, store, ds_client, dify_server, kind, via
):
    """The text can echo the row's own cells: one row alone is retried as its own failure;
    a second, different row failing the same way pauses the batch."""
    message = dify.UPSTREAM_ERRORS[kind]
    reply = (
        dify.finish(status="failed", error=message)
        if via == "run"
        else dify.http_error(400, "completion_request_error", message)
    )
    add_row(store, "row-1")
    add_row(store, "row-2")
    dify_server.script(reply, reply, reply)
    with serve_function("worker/main.py", "process_row") as url:
        first = deliver(url, {"id": "row-1"})
        again = deliver(url, {"id": "row-1"})  # the same row again: still its own
        assert (first.json()["outcome"], again.json()["outcome"]) == ("retry", "retry")
        assert tasks_queue.calls_of("PauseQueue") == []
        second = deliver(url, {"id": "row-2"})
    assert (second.status_code, second.json()["outcome"]) == (503, "paused")
    assert tasks_queue.calls_of("PauseQueue") == [QUEUE]
    assert entity(ds_client, "row-2")["attempts"] == 0  # a pause charges nothing
    code = "provider_credentials" if kind == "credentials" else "provider_quota"
    assert entity(ds_client, "row-2")["error"].startswith(code)


def test_a_failure_known_from_text_is_forgotten_once_a_run_succeeds(
    tasks_queue, store, ds_client, dify_server
):
    """A one-off (one row's own cells echoed in the error) followed by a good run is not held
    against the next row that happens to fail the same way: no pause."""
    reply = dify.finish(status="failed", error=dify.UPSTREAM_ERRORS["credentials"])
    for row_id in ("row-1", "row-2", "row-3"):
        add_row(store, row_id)
    dify_server.script(reply, dify.finish({"answer": "42"}), reply)
    with serve_function("worker/main.py", "process_row") as url:
        outcomes = [deliver(url, {"id": i}).json()["outcome"] for i in ("row-1", "row-2", "row-3")]
    assert outcomes == ["retry", "succeeded", "retry"]
    assert tasks_queue.calls_of("PauseQueue") == []
    assert entity(ds_client, "row-2")["status"] == "SUCCESS"


def test_a_file_host_that_is_down_is_retried(worker_url, store, ds_client, dify_server):
    add_row(store)
    dify_server.script(
        dify.http_error(
            400, "invalid_param", "Reached maximum retries (3) for URL http://files.example/a.pdf"
        )
    )
    response = deliver(worker_url)
    assert (response.status_code, response.json()["outcome"]) == (500, "retry")
    row = entity(ds_client)
    assert (row["status"], row["attempts"]) == ("PENDING", 1)
    assert row["error"].startswith("file_unreachable:")


def test_a_refused_input_in_streaming_mode_fails_at_once_with_difys_reason(
    monkeypatch, worker_env, store, ds_client, dify_server
):
    """Dify answers the stream with one ping and silence; the worker asks again in blocking
    mode, where Dify refuses before any run exists, and records its reason."""
    monkeypatch.setattr("shared.adapters.dify.STREAM_READ_TIMEOUT_S", 1.0)
    monkeypatch.setattr("shared.adapters.dify.STREAM_START_WAIT_S", 1.0)
    monkeypatch.setenv("DIFY_RESPONSE_MODE", "streaming")
    monkeypatch.setenv("DIFY_API_TIMEOUT_MINUTES", "1")
    dify_server.form = [{"select": {"variable": "lang", "required": False, "options": ["ko"]}}]
    add_row(store, inputs={"lang": "fr", "blank": ""})
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
    assert (response.status_code, response.json()["outcome"]) == (200, "failed")
    row = entity(ds_client)
    assert (row["status"], row["attempts"]) == ("FAILED", 1)
    assert "lang in input form must be one of the following: ['ko']" in row["error"]
    modes = [c.body["response_mode"] for c in dify_server.run_calls()]
    assert modes == ["streaming", "blocking"]
    assert all("blank" not in c.body["inputs"] for c in dify_server.run_calls())
    assert not entity(ds_client).get("workflow_run_id")


def test_a_stream_slow_to_start_is_waited_for_not_asked_again(
    monkeypatch, worker_env, store, ds_client, dify_server
):
    """No workflow_started yet, but Dify takes these inputs (its worker is only busy): asking
    again would run the row twice, so the stream is waited for."""
    monkeypatch.setattr("shared.adapters.dify.STREAM_START_WAIT_S", 0.5)
    monkeypatch.setenv("DIFY_RESPONSE_MODE", "streaming")
    monkeypatch.setenv("DIFY_API_TIMEOUT_MINUTES", "1")
    dify_server.form = [{"select": {"variable": "lang", "required": True, "options": ["ko"]}}]
    add_row(store, inputs={"lang": "ko"})
    dify_server.script(dify.slow_start(2.5))
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
    assert (response.status_code, response.json()["outcome"]) == (200, "succeeded")
    assert [c.body["response_mode"] for c in dify_server.run_calls()] == ["streaming"]
    assert [c.path for c in dify_server.calls if c.path.endswith("/parameters")] != []


def test_a_silent_stream_whose_file_host_is_down_is_asked_again_and_retried(
    monkeypatch, worker_env, store, ds_client, dify_server
):
    """Dify fetches a file's headers before any run: the worker does the same (HEAD) when a
    stream stays silent, and asks in blocking mode only when the host does not answer."""
    monkeypatch.setattr("shared.adapters.dify.STREAM_START_WAIT_S", 0.5)
    monkeypatch.setenv("DIFY_RESPONSE_MODE", "streaming")
    monkeypatch.setenv("DIFY_API_TIMEOUT_MINUTES", "1")
    dify_server.form = [{"file": {"variable": "doc", "allowed_file_types": ["document"]}}]
    down = "http://127.0.0.1:9/report.pdf"  # nothing listens on port 9
    add_row(
        store, inputs={"doc": {"type": "document", "transfer_method": "remote_url", "url": down}}
    )
    silent = dify.Reply(lambda h, body: h.refuse_inputs(body, "unused"), "silent")
    dify_server.script(
        silent, dify.http_error(400, "invalid_param", f"Reached maximum retries (3) for URL {down}")
    )
    with serve_function("worker/main.py", "process_row") as url:
        response = deliver(url)
    assert (response.status_code, response.json()["outcome"]) == (500, "retry")
    assert entity(ds_client)["error"].startswith("file_unreachable:")
    assert [c.body["response_mode"] for c in dify_server.run_calls()] == ["streaming", "blocking"]
