"""The operator's command line (`dify-batch`) against the emulator: the real click commands,
the real Datastore client, the Cloud Tasks stand-in for the queue's state."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import grpc
import pytest
from click.testing import CliRunner
from google.cloud import datastore

from cli.main import cli
from local import emulator as emu
from local.cloud_tasks_standin import CloudTasksStandIn
from local.emulator import free_port
from shared.adapters.queue_control import PAUSE_KIND
from shared.adapters.store import StatusStore
from shared.core.model import KIND, NewRow
from tests.conftest import PROJECT
from tests.support.servers import ROOT

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
    status = json.loads(result.stdout)
    assert (status["succeeded"], status["failed"], status["running"], status["waiting"]) == (
        5,
        2,
        1,
        2,
    )
    assert status["percent_done"] == 70.0
    # 3 successes and 1 failure finished within the 5-minute window.
    assert status["rows_per_second"] == pytest.approx(4 / 300, abs=1e-3)
    # 4 rows finished: too few for an honest estimate of the time left.
    assert status["seconds_left"] is None
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
    queue = json.loads(as_json.stdout)["queue"]
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
    rows = csv_rows(result.stdout)
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
    rows = csv_rows(result.stdout)
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


# -- which Datastore, and one clear line when it cannot be read -----------------------------

CLI = [sys.executable, "-m", "cli.main"]


def no_credentials_env(tmp_path) -> dict[str, str]:
    """A shell with no Google credentials at all, and no metadata server asked (off-machine)."""
    keep = ("PATH", "LANG", "SYSTEMROOT")
    return {
        **{k: v for k, v in os.environ.items() if k in keep},
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
    }


def write_dotenv(folder, **values):
    (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def test_with_dotenv_alone_the_cli_reads_the_emulator_it_names(batch, namespace, monkeypatch):
    host = os.environ["DATASTORE_EMULATOR_HOST"]
    monkeypatch.delenv("DATASTORE_EMULATOR_HOST")
    write_dotenv(
        Path.cwd(),
        GOOGLE_CLOUD_PROJECT=PROJECT,
        DATASTORE_NAMESPACE=namespace,
        DATASTORE_EMULATOR_HOST=host,
    )
    result = CliRunner().invoke(cli, ["status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"] == 10
    first = result.stderr.splitlines()[0]
    assert f"Datastore EMULATOR at {host} (from .env)" in first
    assert f"project {PROJECT}, namespace {namespace}" in first


def test_without_dotenv_the_environment_names_the_emulator(batch, namespace):
    result = run(namespace, "status", "--json")
    assert "DATASTORE_EMULATOR_HOST in the environment" in result.stderr.splitlines()[0]


def test_an_explicit_other_project_wins_over_dotenv_and_says_what_is_missing(tmp_path):
    """.env names the local emulator; --project names a cloud project: the CLI goes to real
    Datastore, and without credentials says so in one line."""
    write_dotenv(
        tmp_path,
        GOOGLE_CLOUD_PROJECT="local-project",
        DATASTORE_EMULATOR_HOST="127.0.0.1:8081",
    )
    done = subprocess.run(
        [*CLI, "--project", "my-real-project", "status"],
        cwd=tmp_path,
        env=no_credentials_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("→ real Datastore (Google Cloud"), done.stderr
    assert "project my-real-project" in lines[0]
    assert len(lines) == 2, done.stderr  # the target, then one line: no traceback
    assert "no Google credentials" in lines[1]
    assert "gcloud auth application-default login" in lines[1]


def test_cloud_without_credentials_is_one_line(tmp_path):
    done = subprocess.run(
        [*CLI, "--cloud", "--project", "p1", "export"],
        cwd=tmp_path,
        env=no_credentials_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: no Google credentials")


def test_a_wrong_project_is_not_reported_as_done(batch, namespace):
    result = CliRunner().invoke(cli, ["--project", "nosuch", "--namespace", namespace, "status"])
    assert result.exit_code == 1
    assert f"no rows found in project nosuch, namespace {namespace}" in result.output
    assert "check --project/--namespace" in result.output
    assert "100.0 done" not in result.output


def test_watch_gives_up_on_an_empty_namespace_with_the_reason(namespace):
    result = run(namespace, "watch", "--interval", "0.1", "--wait-for-rows", "0.5")
    assert result.exit_code == 1
    assert f"no rows found in project {PROJECT}, namespace {namespace}" in result.output
    assert "Finished" not in result.output


def test_watch_waits_for_rows_to_appear(store, ds_client, namespace):
    def load_later():
        time.sleep(1.0)
        store.insert_new([NewRow("late", {"t": "x"}, "h", 2)])
        put(ds_client, "late", "SUCCESS", 2, finished_at=datetime.now(UTC))

    loader = threading.Thread(target=load_later)
    loader.start()
    try:
        result = run(namespace, "watch", "--interval", "0.2", "--wait-for-rows", "60")
    finally:
        loader.join()
    assert result.exit_code == 0, result.output
    assert "waiting up to 60 s for rows" in result.output
    assert "Finished" in result.output


def test_an_emulator_stopped_mid_watch_ends_watch_with_one_line(tmp_path):
    try:
        own = emu.start()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        client = datastore.Client(project=PROJECT, namespace="mid")
        with patch.dict(os.environ, {"DATASTORE_EMULATOR_HOST": own.host}):
            client = datastore.Client(project=PROJECT, namespace="mid")
            StatusStore(client=client).insert_new([NewRow("open", {"t": "x"}, "h", 2)])
        watching = subprocess.Popen(
            [*CLI, "--project", PROJECT, "--namespace", "mid", "watch", "--interval", "0.2"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT), "DATASTORE_EMULATOR_HOST": own.host},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert watching.stdout is not None
        assert "waiting" in watching.stdout.readline()  # a first reading: 1 row waiting
    finally:
        own.stop()
    out, err = watching.communicate(timeout=90)
    assert watching.returncode == 1, out + err
    assert "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"Error: no Datastore emulator answers at {own.host}")
    )


def test_subcommand_help_needs_no_settings(tmp_path):
    for command in ("status", "watch", "export"):
        result = CliRunner().invoke(cli, [command, "--help"], env={"GOOGLE_CLOUD_PROJECT": None})
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_no_project_anywhere_says_how_to_give_one(tmp_path):
    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code == 2
    assert "pass --project ID" in result.output


def test_options_ignore_case(batch, namespace):
    result = run(namespace, "export", "--format", "CSV", "--status", "failed")
    assert result.exit_code == 0, result.output
    rows = csv_rows(result.stdout)
    assert sorted(r["id"] for r in rows) == ["r05", "r06"]


@pytest.fixture
def refusing_datastore():
    """A Datastore endpoint that refuses every call with a chosen gRPC status."""
    answer: dict[str, tuple[grpc.StatusCode, str]] = {}

    class Refuse(grpc.GenericRpcHandler):
        def service(self, details):
            def refuse(_request, context):
                code, message = answer["now"]
                context.abort(code, message)

            return grpc.unary_unary_rpc_method_handler(refuse)

    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((Refuse(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    def invoke(code, message, *args):
        answer["now"] = (code, message)
        return CliRunner().invoke(
            cli,
            ["--emulator", "--project", "p1", *args],
            env={"DATASTORE_EMULATOR_HOST": f"127.0.0.1:{port}"},
        )

    yield invoke
    server.stop(0)


def test_permission_denied_is_one_line_with_the_role(refusing_datastore):
    result = refusing_datastore(
        grpc.StatusCode.PERMISSION_DENIED, "Missing or insufficient permissions.", "status"
    )
    assert result.exit_code == 1
    assert "permission denied on project p1" in result.output
    assert "roles/datastore.viewer" in result.output
    assert "Traceback" not in result.output


def test_a_missing_index_says_to_apply_terraform(refusing_datastore):
    result = refusing_datastore(
        grpc.StatusCode.FAILED_PRECONDITION,
        "no matching index found. recommended index is: ...",
        "export",
        "--status",
        "FAILED",
    )
    assert result.exit_code == 1
    assert "lacks a Datastore index" in result.output
    assert "terraform" in result.output


def test_a_disabled_api_says_which_to_enable(refusing_datastore):
    result = refusing_datastore(
        grpc.StatusCode.PERMISSION_DENIED,
        "Cloud Datastore API has not been used in project p1 before or it is disabled.",
        "status",
    )
    assert "gcloud services enable datastore.googleapis.com --project p1" in result.output


# -- what is printed cannot take over the terminal; odd entities do not break the view -------


def test_markup_and_escapes_in_ids_and_errors_are_shown_as_text(store, ds_client, namespace):
    hostile = {
        "[/]": "closing tag",
        "[link=https://example.com]click[/link]": "a link",
        "esc": "boom \x1b]0;pwned\x07 \x1b[2J cleared [bold]loud[/bold]",
    }
    store.insert_new([NewRow(i, {"t": "x"}, "h", n + 2) for n, i in enumerate(hostile)])
    for n, (row_id, error) in enumerate(hostile.items()):
        put(ds_client, row_id, "FAILED", n + 2, error=error, finished_at=NOW)
    result = run(namespace, "status", "--failures", "5", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "[/]" in result.output
    assert "[link=https://example.com]click[/link]" in result.output
    assert "[bold]loud[/bold]" in result.output
    assert "\x1b" not in result.output
    assert "\x07" not in result.output


def test_hand_edited_numbers_do_not_break_status_or_watch(store, ds_client, namespace):
    store.insert_new([NewRow(f"h{i}", {"t": "x"}, "h", i + 2) for i in range(3)])
    put(ds_client, "h0", "SUCCESS", 2, elapsed_time=float("nan"), total_tokens=5, finished_at=NOW)
    put(ds_client, "h1", "SUCCESS", 3, elapsed_time="slow", total_tokens="many", finished_at=NOW)
    put(ds_client, "h2", "FAILED", "three", error=b"bytes", attempts="x", finished_at=NOW)
    for args in (["status"], ["status", "--json"], ["watch", "--interval", "0.1"]):
        result = run(namespace, *args)
        assert result.exit_code == 0, (args, result.output)
    assert json.loads(run(namespace, "status", "--json").stdout)["succeeded"] == 2


# -- honest progress ------------------------------------------------------------------------


def test_a_retried_row_shows_its_last_error_while_it_waits(batch, namespace, ds_client):
    put(ds_client, "r08", "PENDING", 10, attempts=1, error="rate_limit: the provider said 429")
    as_json = json.loads(run(namespace, "status", "--json").stdout)
    assert [(r["id"], r["attempts"]) for r in as_json["retrying"]] == [("r08", 1)]
    assert as_json["retrying"][0]["error"] == "rate_limit: the provider said 429"
    table = run(namespace, "status")
    assert "Retrying (last error)" in table.output
    assert "the provider said 429" in table.output


def test_a_young_batch_is_paced_over_its_own_life(store, ds_client, namespace):
    """6 rows finished in a batch loaded 20 s ago: about 0.3 rows/s, not 6 / 300 s."""
    now = datetime.now(UTC)
    store.insert_new([NewRow(f"y{i}", {"t": "x"}, "h", i + 2) for i in range(10)])
    for i in range(6):
        put(ds_client, f"y{i}", "SUCCESS", i + 2, finished_at=now - timedelta(seconds=5))
    StatusStore(client=ds_client).note_run("sheet", now - timedelta(seconds=20))
    status = json.loads(run(namespace, "status", "--json", "--window", "5").stdout)
    assert 18 <= status["pace_seconds"] <= 60
    assert status["rows_per_second"] == pytest.approx(6 / status["pace_seconds"], rel=0.05)
    assert status["rows_per_second"] > 0.09  # 6 / 300 s would be 0.02
    assert status["seconds_left"] == pytest.approx(4 / status["rows_per_second"], rel=0.05)
