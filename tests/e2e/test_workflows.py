"""Several workflows from one sheet, end to end: rows routed by a column to their own Dify app
(own endpoint, key, variable names and queue with its own cap), through the real loader,
the Cloud Tasks stand-in and the real worker."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest

from local import dify_standin as dify
from local.cloud_tasks_standin import CloudTasksStandIn
from local.sheets_standin import SheetsStandIn
from shared.adapters.store import spend_totals
from shared.core.model import KIND
from shared.entrypoints import wiring
from tests.conftest import PROJECT
from tests.support.servers import serve_loader_and_worker, wait_for

pytestmark = pytest.mark.emulator
CAPS = {"math": 2, "essay": 3, "translate": 1}


def statuses(ds_client):
    return Counter(e["status"] for e in ds_client.query(kind=KIND).fetch())


@pytest.fixture
def apps():
    servers = {
        name: dify.DifyStandIn(
            api_key=f"app-{name}-key", latency=0.3, max_active_requests=cap
        ).start()
        for name, cap in CAPS.items()
    }
    yield servers
    for server in servers.values():
        server.stop()


def workflows_json(apps, **key_overrides):
    return json.dumps(
        {
            "math": {
                "endpoint": apps["math"].url,
                "api_key": key_overrides.get("math", "app-math-key"),
                "queue": "math",
                "input_columns": {"질문": "problem"},
            },
            "essay": {
                "endpoint": apps["essay"].url,
                "api_key": "app-essay-key",
                "queue": "essay",
                "response_mode": "blocking",
            },
            "translate": {
                "endpoint": apps["translate"].url,
                "api_key": "app-translate-key",
                "queue": "translate",
                "workflow_id": "5f0c3b8e-2024-4d06-9a51-7c1e0b2d4f6a",  # a published version (UUID)
            },
        }
    )


def start(monkeypatch, namespace, apps, sheet_rows, **key_overrides):
    sheets = SheetsStandIn({"book": {"Sheet1": [list(r) for r in sheet_rows]}}).start()
    queue = CloudTasksStandIn(dispatch=True, queue_caps=dict(CAPS), min_backoff=0.1).start()
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "DATASTORE_NAMESPACE": namespace,
        "WORKFLOWS": workflows_json(apps, **key_overrides),
        "WORKFLOW_COLUMN": "kind",
        "DEFAULT_WORKFLOW": "essay",
        "INPUT_COLUMNS": "질문->question, 학년->grade",
        "SPREADSHEET_ID": "book",
        "SHEETS_API_ENDPOINT": sheets.endpoint,
        "TASKS_LOCATION": "asia-northeast3",
        "TASKS_QUEUE": "essay",
        "CLOUD_TASKS_EMULATOR_HOST": queue.host,
        "CHECK_INPUTS": "false",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return sheets, queue


SHEET = [
    ["id", "kind", "질문", "학년"],
    *[[f"m{i}", "math", f"{i} + {i} = ?", "3"] for i in range(6)],
    *[[f"e{i}", "essay", f"에세이 {i}", "5"] for i in range(6)],
    *[[f"t{i}", "translate", f"translate {i}", "1"] for i in range(3)],
    ["blank", "", "기본으로", "2"],
    ["odd", "poetry", "시를 써 줘", "4"],
]


def test_each_row_runs_on_its_own_workflow_under_its_own_cap(
    monkeypatch, namespace, ds_client, apps
):
    sheets, queue = start(monkeypatch, namespace, apps, SHEET)
    try:
        with serve_loader_and_worker(monkeypatch) as loader_url:
            summary = httpx.post(loader_url, timeout=120).json()
            wait_for(lambda: statuses(ds_client) == Counter({"SUCCESS": 16}))
            # The owners move a math row to the essay app; asked to, it runs there.
            sheets.spreadsheets["book"]["Sheet1"][1][1] = "essay"
            again = httpx.post(loader_url, json={"reprocess_changed": True}, timeout=120)
            wait_for(lambda: statuses(ds_client) == Counter({"SUCCESS": 16}))
    finally:
        queue.stop()
        sheets.stop()
    assert summary["tasks_created"] == 16
    [odd] = summary["invalid"]
    assert odd["row_id"] == "odd"
    assert "'poetry', which names no workflow; known: essay, math, translate" in odd["reason"]
    assert again.json()["re_enqueued"] == {"reprocess_changed": 1}

    math_calls = apps["math"].run_calls()
    assert {c.authorization for c in math_calls} == {"Bearer app-math-key"}
    assert {tuple(sorted(c.body["inputs"])) for c in math_calls} == {("grade", "id", "problem")}
    assert sorted(c.body["inputs"]["id"] for c in math_calls) == [f"m{i}" for i in range(6)]
    essay_calls = apps["essay"].run_calls()
    assert {c.authorization for c in essay_calls} == {"Bearer app-essay-key"}
    assert {c.body["response_mode"] for c in essay_calls} == {"blocking"}
    essay_ids = sorted(c.body["inputs"]["id"] for c in essay_calls)
    assert essay_ids == sorted([*(f"e{i}" for i in range(6)), "blank", "m0"])
    assert {tuple(sorted(c.body["inputs"])) for c in essay_calls} == {("grade", "id", "question")}
    translate_calls = apps["translate"].run_calls()
    assert {c.path for c in translate_calls} == {
        "/v1/workflows/5f0c3b8e-2024-4d06-9a51-7c1e0b2d4f6a/run"
    }
    for name, cap in CAPS.items():
        assert apps[name].peak_in_flight <= cap
        assert apps[name].refused == 0  # each queue's cap kept its app under its limit
        assert queue.peak_per_queue[name] <= cap
    moved = ds_client.get(ds_client.key(KIND, "m0"))
    assert (moved["workflow"], moved["attempts"]) == ("essay", 1)
    assert ds_client.get(ds_client.key(KIND, "blank"))["workflow"] == "essay"


def test_a_wrong_key_pauses_only_its_workflows_queue(monkeypatch, namespace, ds_client, apps):
    sheets, queue = start(monkeypatch, namespace, apps, SHEET[:-1], math="app-typo")
    try:
        with serve_loader_and_worker(monkeypatch) as loader_url:
            httpx.post(loader_url, timeout=120)
            wait_for(
                lambda: (
                    statuses(ds_client) == Counter({"SUCCESS": 10, "PENDING": 6})
                    and not queue.in_flight()
                )
            )
            summary = httpx.post(loader_url, timeout=120).json()
    finally:
        queue.stop()
        sheets.stop()
    math_queue = f"projects/{PROJECT}/locations/asia-northeast3/queues/math"
    assert queue.paused == {math_queue}
    assert summary["queue"]["state"] == "RUNNING"  # essay, the default
    assert summary["queue"]["queues"]["math"]["state"] == "PAUSED"
    assert summary["queue"]["queues"]["math"]["paused_code"] == "unauthorized"
    assert summary["queue"]["queues"]["translate"]["state"] == "RUNNING"
    pending = [e for e in ds_client.query(kind=KIND).fetch() if e["status"] == "PENDING"]
    assert {e["workflow"] for e in pending} == {"math"}
    assert all(e["attempts"] == 0 for e in pending)
    assert len(apps["math"].run_calls()) <= CAPS["math"]  # one wave at most


def with_math_limit(apps, tokens):
    settings = json.loads(workflows_json(apps))
    settings["math"]["max_total_tokens"] = tokens
    return json.dumps(settings)


def test_a_workflows_own_spend_limit_pauses_only_its_queue_until_raised(
    monkeypatch, namespace, ds_client, apps
):
    sheets, queue = start(monkeypatch, namespace, apps, SHEET[:-1])
    monkeypatch.setenv("WORKFLOWS", with_math_limit(apps, 2 * 123))  # 123 tokens a run
    math_queue = f"projects/{PROJECT}/locations/asia-northeast3/queues/math"
    try:
        with serve_loader_and_worker(monkeypatch) as loader_url:
            httpx.post(loader_url, timeout=120)
            wait_for(
                lambda: (
                    queue.paused == {math_queue}
                    and statuses(ds_client)["PENDING"] + statuses(ds_client)["SUCCESS"] == 16
                    and not statuses(ds_client)["PROCESSING"]
                    and not queue.in_flight()
                    and len(apps["essay"].run_calls()) == 7
                )
            )
            math_done = len(apps["math"].run_calls())
            refused = httpx.post(loader_url, json={"resume": True}, timeout=120).json()
            monkeypatch.setenv("WORKFLOWS", with_math_limit(apps, 100 * 123))
            wiring.reset()  # a redeploy with the raised limit
            resumed = httpx.post(loader_url, json={"resume": True}, timeout=120).json()
            wait_for(lambda: statuses(ds_client) == Counter({"SUCCESS": 16}))
    finally:
        queue.stop()
        sheets.stop()
    # The other workflows ran to the end; math stopped at its limit (its 2 rows in flight at
    # most past it), and its queue alone stayed paused until the limit was raised.
    assert 2 <= math_done <= 4
    math_state = refused["queue"]["queues"]["math"]
    assert math_state["state"] == "PAUSED"
    assert math_state["paused_code"] == "spend_limit"
    assert math_state["resume_refused"].startswith("spend limit reached: ")
    assert "of 246 tokens (workflow 'math')" in math_state["resume_refused"]
    assert refused["queue"]["state"] == "RUNNING"
    assert resumed["queue"]["queues"]["math"]["resumed"] is True
    assert len(apps["math"].run_calls()) == 6  # no math row ran twice
    counter = spend_totals(ds_client)
    assert counter == {"math": 6 * 123, "essay": 7 * 123, "translate": 3 * 123}
