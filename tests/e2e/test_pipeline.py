"""The whole pipeline on one machine: the loader reads the sheet stand-in and enqueues
into the Cloud Tasks stand-in, which delivers to the worker like a queue with
max_concurrent_dispatches; the worker runs the Dify stand-in. Faults included."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from local import dify_standin as dify
from local.cloud_tasks_standin import CloudTasksStandIn
from local.secret_manager_standin import SecretManagerStandIn
from local.sheets_standin import SheetsStandIn
from shared.adapters.queue_control import PAUSE_KIND
from shared.core.model import KIND
from tests.conftest import PROJECT
from tests.support.servers import serve_function, serve_loader_and_worker, wait_for

pytestmark = pytest.mark.emulator
KEY = "app-e2e-key"


def test_every_row_runs_once_never_above_the_concurrency_cap(monkeypatch, namespace, ds_client):
    rows = [["id", "질문"], *[[f"q{i:03d}", f"질문 {i} 🐱"] for i in range(30)]]
    sheets = SheetsStandIn({"book": {"Sheet1": rows}}).start()
    llm = dify.DifyStandIn(api_key=KEY, latency=0.2).start()
    # Two rows meet a flaky Dify first: they must be retried and still end SUCCESS.
    llm.script(dify.http_error(503, "unavailable", "busy"), dify.cut_off())
    queue = CloudTasksStandIn(dispatch=True, max_concurrent_dispatches=4, min_backoff=0.1)
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "DATASTORE_NAMESPACE": namespace,
        "DIFY_API_ENDPOINT": llm.url,
        "DIFY_API_KEY": KEY,
        "DIFY_RESPONSE_MODE": "streaming",
        "SPREADSHEET_ID": "book",
        "SHEET_NAME": "Sheet1",
        "SHEETS_API_ENDPOINT": sheets.endpoint,
        "TASKS_LOCATION": "asia-northeast3",
        "TASKS_QUEUE": "dify",
        "CLOUD_TASKS_EMULATOR_HOST": "",  # set below, once the queue is up
    }
    try:
        with serve_function("worker/main.py", "process_row") as worker_url:
            queue.start()
            env.update(WORKER_URL=worker_url, CLOUD_TASKS_EMULATOR_HOST=queue.host)
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            with serve_function("loader/main.py", "load_sheet") as loader_url:
                summary = httpx.post(loader_url, timeout=120).json()
                assert summary["tasks_created"] == 30

                def settled() -> bool:
                    statuses = Counter(e["status"] for e in ds_client.query(kind=KIND).fetch())
                    return statuses == Counter({"SUCCESS": 30})

                wait_for(settled)
                again = httpx.post(loader_url, timeout=120).json()
    finally:
        queue.stop()
        llm.stop()
        sheets.stop()
    assert again["skipped"] == {"SUCCESS": 30}
    assert again["tasks_created"] == 0
    runs = Counter(call.body["inputs"]["id"] for call in llm.run_calls())
    assert len(runs) == 30
    assert sum(runs.values()) == 32  # 30 rows + the 2 retried after a fault
    assert llm.peak_in_flight <= 4
    assert queue.peak_in_flight <= 4
    # The cut-off run was charged; the 503 (Dify full, no run started) was not.
    attempts = Counter(e["attempts"] for e in ds_client.query(kind=KIND).fetch())
    assert attempts == Counter({1: 29, 2: 1})


def statuses(ds_client) -> Counter:
    return Counter(e["status"] for e in ds_client.query(kind=KIND).fetch())


@pytest.mark.parametrize("cause", ["wrong_key", "quota"])
def test_an_app_wide_failure_pauses_the_batch_within_one_wave_and_resume_finishes_it(
    monkeypatch, namespace, ds_client, cause
):
    rows = [["id", "질문"], *[[f"p{i:03d}", f"질문 {i}"] for i in range(24)]]
    sheets = SheetsStandIn({"book": {"Sheet1": rows}}).start()
    llm = dify.DifyStandIn(api_key=KEY, latency=0.3).start()
    secrets = SecretManagerStandIn({"dify-key": "app-typo" if cause == "wrong_key" else KEY})
    secrets.start()
    if cause == "quota":
        llm.behaviour = dify.quota_exceeded
    queue = CloudTasksStandIn(dispatch=True, max_concurrent_dispatches=4, min_backoff=0.1)
    queue_path = f"projects/{PROJECT}/locations/asia-northeast3/queues/dify"
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "DATASTORE_NAMESPACE": namespace,
        "DIFY_API_ENDPOINT": llm.url,
        "DIFY_API_KEY_SECRET_ID": "dify-key",
        "SECRET_MANAGER_EMULATOR_HOST": secrets.host,
        "SPREADSHEET_ID": "book",
        "SHEETS_API_ENDPOINT": sheets.endpoint,
        "TASKS_LOCATION": "asia-northeast3",
        "TASKS_QUEUE": "dify",
        # The loader's own check of the input form would stop at the wrong key before any
        # task exists; here the worker's side is under test.
        "CHECK_INPUTS": "false",
    }
    try:
        queue.start()
        env["CLOUD_TASKS_EMULATOR_HOST"] = queue.host
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with serve_loader_and_worker(monkeypatch) as loader_url:
            assert httpx.post(loader_url, timeout=120).json()["tasks_created"] == 24
            wait_for(lambda: queue.paused and queue.peak_in_flight > 0 and not queue.in_flight())
            # One wave at most: the rows already dispatched when the first one paused it.
            assert len(llm.run_calls()) <= 4
            assert statuses(ds_client) == Counter({"PENDING": 24})
            assert all(e["attempts"] == 0 for e in ds_client.query(kind=KIND).fetch())
            summary = httpx.post(loader_url, timeout=120).json()
            assert summary["queue"]["state"] == "PAUSED"
            expected = "unauthorized" if cause == "wrong_key" else "rate_limit_error"
            assert summary["queue"]["paused_code"] == expected
            assert summary["queue"]["paused_reason"].startswith(expected)
            assert summary["tasks_created"] == 0  # the tasks wait in the paused queue
            time.sleep(1)
            assert len(llm.run_calls()) <= 4  # it stays paused: never resumed by itself

            # The operator fixes the cause, then resumes.
            if cause == "wrong_key":
                secrets.secrets["dify-key"] = KEY
            else:
                llm.behaviour = dify.finish
            resumed = httpx.post(loader_url, params={"resume": "true"}, timeout=120).json()
            assert resumed["queue"]["state"] == "RUNNING"
            assert resumed["queue"]["resumed"] is True
            wait_for(lambda: statuses(ds_client) == Counter({"SUCCESS": 24}))
    finally:
        queue.stop()
        llm.stop()
        sheets.stop()
        secrets.stop()
    assert all(e["attempts"] == 1 for e in ds_client.query(kind=KIND).fetch())
    assert queue.calls_of("ResumeQueue") == [queue_path]
    assert ds_client.get(ds_client.key(PAUSE_KIND, queue_path)) is None  # the note is cleared
