"""The operator's command line (`dify-batch`) against the emulator: the real click commands,
the real Datastore client, the Cloud Tasks stand-in for the queue's state."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from google.cloud import datastore

from cli.main import cli
from local.cloud_tasks_standin import CloudTasksStandIn
from local.emulator import free_port
from shared.adapters.queue_control import PAUSE_KIND
from shared.core.model import KIND, NewRow
from tests.conftest import PROJECT

pytestmark = pytest.mark.emulator
NOW = datetime.now(UTC)


def put(ds_client, row_id, status, row_number, **extra):
    entity = ds_client.get(ds_client.key(KIND, row_id))
    entity.update(status=status, **extra)
    ds_client.put(entity)


@pytest.fixture
def batch(store, ds_client):
    """10 rows: 5 SUCCESS (3 of them in the last minutes), 2 FAILED, 1 PROCESSING, 2 PENDING."""
    texts = ['질문, "인용" 포함', "multi\nline", "plain", "🐱 emoji", "x"] * 2
    store.insert_new(
        [NewRow(f"r{i:02d}", {"title": t, "n": str(i)}, "h", i + 2) for i, t in enumerate(texts)]
    )
    for i in range(5):
        put(
            ds_client,
            f"r{i:02d}",
            "SUCCESS",
            i + 2,
            result=json.dumps({"answer": f'답 {i}, "ok"'}, ensure_ascii=False),
            total_tokens=100,
            elapsed_time=1.5,
            attempts=1,
            finished_at=NOW - timedelta(minutes=1 if i < 3 else 30),
        )
    put(
        ds_client,
        "r05",
        "FAILED",
        7,
        error="invalid_param: old",
        attempts=1,
        finished_at=NOW - timedelta(minutes=20),
    )
    put(
        ds_client,
        "r06",
        "FAILED",
        8,
        error="workflow_failed: 최근 실패",
        attempts=2,
        finished_at=NOW - timedelta(minutes=2),
    )
    put(ds_client, "r07", "PROCESSING", 9, attempts=1)
    return ds_client


def csv_rows(text):
    """The exported CSV's rows (it starts with a UTF-8 byte order mark, for Excel)."""
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))


def run(namespace, *args, env=None):
    return CliRunner().invoke(
        cli, ["--project", PROJECT, "--namespace", namespace, *args], env=env or {}
    )


def test_status_json_counts_pace_usage_and_latest_failures(batch, namespace):
    result = run(namespace, "status", "--json", "--window", "5")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert (status["succeeded"], status["failed"], status["running"], status["waiting"]) == (
        5,
        2,
        1,
        2,
    )
    assert status["percent_done"] == 70.0
    # 3 successes and 1 failure finished within the 5-minute window.
    assert status["rows_per_second"] == pytest.approx(4 / 300, abs=1e-3)
    assert status["seconds_left"] == pytest.approx(3 / (4 / 300), rel=0.01)
    assert (status["total_tokens"], status["workflow_seconds"]) == (500, 7.5)
    assert [f["id"] for f in status["latest_failures"]] == ["r06", "r05"]
    assert status["latest_failures"][0]["error"] == "workflow_failed: 최근 실패"
    assert status["queue"] is None


def test_status_shows_a_paused_queue_and_why(batch, namespace, ds_client):
    tasks = CloudTasksStandIn().start()
    path = f"projects/{PROJECT}/locations/asia-northeast3/queues/rows"
    try:
        tasks.paused.add(path)
        note = datastore.Entity(ds_client.key(PAUSE_KIND, path))
        note.update(code="unauthorized", reason="unauthorized: Dify refuses the key")
        ds_client.put(note)
        env = {"CLOUD_TASKS_EMULATOR_HOST": tasks.host}
        args = ("--queue", "rows", "--location", "asia-northeast3")
        as_json = CliRunner().invoke(
            cli,
            ["--project", PROJECT, "--namespace", namespace, *args, "status", "--json"],
            env=env,
        )
        table = CliRunner().invoke(
            cli, ["--project", PROJECT, "--namespace", namespace, *args, "status"], env=env
        )
    finally:
        tasks.stop()
    queue = json.loads(as_json.output)["queue"]
    assert (queue["state"], queue["paused_code"]) == ("PAUSED", "unauthorized")
    assert "PAUSED" in table.output
    assert "Dify refuses the key" in table.output
    assert "resume" in table.output


def test_status_as_a_table_for_people(batch, namespace):
    result = run(namespace, "status")
    assert result.exit_code == 0
    for text in ("SUCCESS", "FAILED", "PENDING", "70.0 done", "Latest failures", "최근 실패"):
        assert text in result.output


def test_export_csv_is_ordered_by_sheet_row_and_keeps_hard_text(batch, namespace):
    result = run(namespace, "export", "--format", "csv", "--page-size", "3")
    assert result.exit_code == 0, result.output
    rows = csv_rows(result.output)
    assert [r["row_number"] for r in rows] == [str(n) for n in range(2, 12)]
    assert json.loads(rows[0]["inputs"]) == {"title": '질문, "인용" 포함', "n": "0"}
    assert json.loads(rows[1]["inputs"])["title"] == "multi\nline"
    assert json.loads(rows[0]["outputs"]) == {"answer": '답 0, "ok"'}
    assert rows[6]["error"] == "workflow_failed: 최근 실패"


def test_export_jsonl_filtered_by_status(batch, namespace, tmp_path):
    target = tmp_path / "failed.jsonl"
    result = run(namespace, "export", "--format", "jsonl", "--status", "FAILED", "-o", str(target))
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in target.read_text(encoding="utf-8").splitlines()]
    assert [x["id"] for x in lines] == ["r05", "r06"]  # by sheet row
    assert {x["status"] for x in lines} == {"FAILED"}
    assert "wrote 2 rows" in result.output


def test_export_reads_page_by_page_past_many_pages(store, namespace):
    store.insert_new([NewRow(f"p{i:04d}", {"t": "가" * 10}, "h", i + 2) for i in range(1200)])
    result = run(namespace, "export", "--format", "csv", "--page-size", "100")
    rows = csv_rows(result.output)
    assert len(rows) == 1200
    assert [r["id"] for r in rows[:2]] == ["p0000", "p0001"]
    assert rows[-1]["id"] == "p1199"


def test_watch_ends_when_nothing_waits_or_runs(store, ds_client, namespace):
    store.insert_new([NewRow("w1", {"t": "x"}, "h", 2)])
    put(ds_client, "w1", "SUCCESS", 2, finished_at=NOW)
    result = run(namespace, "watch", "--interval", "0.1")
    assert result.exit_code == 0, result.output
    assert "100.0% done" in result.output
    assert "Finished" in result.output


def test_an_emulator_that_is_not_running_fails_fast_with_advice(namespace):
    host = f"127.0.0.1:{free_port()}"
    result = run(namespace, "status", env={"DATASTORE_EMULATOR_HOST": host})
    assert result.exit_code != 0
    assert "make run-emulator" in result.output
