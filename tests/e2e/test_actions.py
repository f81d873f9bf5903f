"""The operator's actions (`dify-batch run/pause/resume/retry/show`) and the spend limit, over
the wire: the real click commands call the loader served by functions-framework, which
enqueues into the Cloud Tasks stand-in, which delivers to the worker, which runs the Dify
stand-in and records in the emulator."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs

import google.oauth2.credentials
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cli.main import cli
from local import dify_standin as dify
from local.cloud_tasks_standin import CloudTasksStandIn
from local.emulator import free_port
from local.sheets_standin import SheetsStandIn
from shared.adapters.queue_control import PAUSE_KIND
from shared.adapters.store import spend_totals
from shared.core.model import KIND
from shared.entrypoints import wiring
from tests.conftest import PROJECT
from tests.support.servers import serve_loader_and_worker, wait_for

pytestmark = pytest.mark.emulator
KEY = "app-actions-key"
TOKENS = 123  # what the Dify stand-in reports per run
QUEUE_PATH = f"projects/{PROJECT}/locations/asia-northeast3/queues/dify"


@dataclass
class Stack:
    loader_url: str
    namespace: str
    ds_client: Any
    llm: dify.DifyStandIn
    queue: CloudTasksStandIn
    sheets: SheetsStandIn

    outputs: list[str] = field(default_factory=list)  # what the commands printed

    def cli(self, *args: str) -> Result:
        result = CliRunner().invoke(
            cli,
            ["--project", PROJECT, "--namespace", self.namespace, *args],
            env={"LOADER_URL": self.loader_url, "COLUMNS": "200"},
        )
        self.outputs.append(result.output)
        return result

    def ok(self, *args: str) -> Result:
        result = self.cli(*args)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str) -> Any:
        # The functions run in this process: their log lines come first.
        return json.loads(self.ok(*args, "--json").output.strip().splitlines()[-1])

    def statuses(self) -> Counter[str]:
        return Counter(e["status"] for e in self.ds_client.query(kind=KIND).fetch())

    def settled(self) -> bool:
        counts = self.statuses()
        return not counts["PENDING"] and not counts["PROCESSING"]


@contextmanager
def stack(monkeypatch, namespace, ds_client, rows, **settings: str) -> Iterator[Stack]:
    sheets = SheetsStandIn({"book": {"Sheet1": rows}}).start()
    llm = dify.DifyStandIn(api_key=KEY, latency=0.2).start()
    queue = CloudTasksStandIn(dispatch=True, max_concurrent_dispatches=2, min_backoff=0.1)
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "DATASTORE_NAMESPACE": namespace,
        "DIFY_API_ENDPOINT": llm.url,
        "DIFY_API_KEY": KEY,
        "SPREADSHEET_ID": "book",
        "SHEETS_API_ENDPOINT": sheets.endpoint,
        "TASKS_LOCATION": "asia-northeast3",
        "TASKS_QUEUE": "dify",
        "CHECK_INPUTS": "false",
        **settings,
    }
    try:
        queue.start()
        env["CLOUD_TASKS_EMULATOR_HOST"] = queue.host
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with serve_loader_and_worker(monkeypatch) as loader_url:
            yield Stack(loader_url, namespace, ds_client, llm, queue, sheets)
    finally:
        queue.stop()
        llm.stop()
        sheets.stop()


def fails_when_asked() -> dify.Reply:
    """Rows whose question says `bad` fail in the workflow; the others succeed."""

    def write(h: Any, body: dict[str, Any]) -> None:
        question = str((body.get("inputs") or {}).get("질문", ""))
        if "bad" in question:
            dify.finish(status="failed", error=f"LLM node failed: {question}").write(h, body)
        else:
            dify.finish().write(h, body)

    return dify.Reply(write, "fails_when_asked")


def test_run_pause_resume_show(monkeypatch, namespace, ds_client):
    rows = [
        ["id", "질문", "학년"],
        *[[f"k{i:02d}", f"광합성이란 무엇인가요? {i}", "중2"] for i in range(6)],
    ]
    with stack(monkeypatch, namespace, ds_client, rows) as s:
        dry = s.json("run", "--dry-run")
        assert dry["dry_run"] is True
        assert dry["new"] == 6
        assert dry["tasks_created"] == 0
        assert s.statuses() == Counter()  # a dry run writes nothing

        paused = s.ok("pause").output
        assert "queue dify: paused" in paused
        assert "paused 1 of 1 queue(s)" in paused
        assert s.queue.paused

        table = s.ok("run").output
        assert "Loader run" in table
        assert "tasks created" in table
        assert "PAUSED" in table  # the summary shows the queue is paused, and why
        time.sleep(1)
        assert s.statuses() == Counter({"PENDING": 6})  # nothing ran while paused

        again = s.ok("pause").output
        assert "already PAUSED" in again
        assert "paused 0 of 1 queue(s)" in again

        resumed = s.ok("resume").output
        assert "queue dify: resumed (was paused: paused by an operator" in resumed
        assert "resumed 1 of 1 queue(s); the loader run enqueued 0 task(s)" in resumed
        wait_for(lambda: s.statuses() == Counter({"SUCCESS": 6}))
        idle = s.ok("resume").output
        assert "not paused (RUNNING), nothing to resume" in idle

        record = s.json("show", "k03")
        assert record["status"] == "SUCCESS"
        assert record["attempts"] == 1
        assert record["inputs"] == {"id": "k03", "질문": "광합성이란 무엇인가요? 3", "학년": "중2"}
        assert record["outputs"]["inputs"]["질문"] == "광합성이란 무엇인가요? 3"  # echoed
        assert record["workflow_run_id"] in {r for r in s.llm.runs}
        assert record["total_tokens"] == TOKENS
        assert record["finished_at"] is not None
        shown = s.ok("show", "k03").output
        assert "광합성이란 무엇인가요? 3" in shown
        assert "SUCCESS" in shown

        missing = s.cli("show", "nope")
        assert missing.exit_code == 1
        assert "no row with id 'nope'" in missing.output


def test_retry_selects_failed_rows_by_error_time_workflow_and_id(monkeypatch, namespace, ds_client):
    rows = [
        ["id", "질문"],
        *[[f"r{i:02d}", f"{'bad ' if i % 3 == 0 else ''}질문 {i}"] for i in range(9)],
    ]
    with stack(monkeypatch, namespace, ds_client, rows) as s:
        s.llm.behaviour = fails_when_asked
        assert s.json("run")["tasks_created"] == 9
        wait_for(s.settled)
        failed = {e.key.name for e in ds_client.query(kind=KIND).fetch() if e["status"] == "FAILED"}
        assert failed == {"r00", "r03", "r06"}

        # Make the selectors tell rows apart: r00 failed long ago, r06 on another workflow.
        old = ds_client.get(ds_client.key(KIND, "r00"))
        old["finished_at"] = datetime.now(UTC) - timedelta(days=3)
        ds_client.put(old)
        other = ds_client.get(ds_client.key(KIND, "r06"))
        other["workflow"] = "translate"
        ds_client.put(other)

        def would(*args: str) -> list[str]:
            return sorted(s.json("retry", "--dry-run", *args)["ids"])

        assert would("--error-contains", "llm NODE failed") == ["r00", "r03", "r06"]
        assert would("--error-contains", "bad 질문 3") == ["r03"]
        assert would("--since", "1d") == ["r03", "r06"]
        assert would("--workflow", "translate") == ["r06"]
        assert would("--workflow", "default", "--since", "2h") == ["r03"]
        assert would("r00", "r01", "zz") == ["r00"]
        ids = s.json("retry", "--dry-run", "r00", "r01", "zz")
        assert ids["not_found"] == ["zz"]
        assert ids["not_failed"] == ["r01"]
        table = s.ok("retry", "--dry-run", "--error-contains", "failed").output
        assert "would retry 3 FAILED row(s)" in table
        assert s.statuses() == Counter({"SUCCESS": 6, "FAILED": 3})  # dry runs change nothing

        refused = s.cli("retry")
        assert refused.exit_code == 2
        assert "say which FAILED rows to retry" in refused.output

        # The workflow's bug is fixed; retry the rows of the last day.
        other["workflow"] = None  # back on the one workflow this stack runs
        ds_client.put(other)
        s.llm.behaviour = dify.finish
        calls_before = len(s.llm.run_calls())
        done = s.ok("retry", "--since", "1d").output
        assert "retried 2 of 2 selected FAILED row(s): back to PENDING, 2 task(s) created" in done
        wait_for(s.settled)
        assert s.statuses() == Counter({"SUCCESS": 8, "FAILED": 1})
        assert len(s.llm.run_calls()) == calls_before + 2
        assert ds_client.get(ds_client.key(KIND, "r00"))["status"] == "FAILED"  # not selected
        nothing = s.ok("retry", "--error-contains", "no such error").output
        assert "nothing to retry: 0 FAILED row(s) matched" in nothing

        # `run` passes the loader's options on.
        assert s.json("run", "--write-back-only")["rows_read"] == 9
        assert s.json("run", "--retry-failed", "--dry-run")["re_enqueued"] == {"retry_failed": 1}
        s.sheets.spreadsheets["book"]["Sheet1"][2][1] = "질문 1 (고침)"  # r01, SUCCESS
        changed = s.json("run", "--reprocess-changed", "--retry-failed")
        assert changed["re_enqueued"] == {"reprocess_changed": 1, "retry_failed": 1}
        wait_for(lambda: s.statuses() == Counter({"SUCCESS": 9}))


def test_a_spend_limit_pauses_mid_way_charges_nothing_twice_and_resumes_once_raised(
    monkeypatch, namespace, ds_client, capfd
):
    limit = 6 * TOKENS
    rows = [["id", "질문"], *[[f"s{i:02d}", f"질문 {i}"] for i in range(20)]]
    with stack(monkeypatch, namespace, ds_client, rows, MAX_TOTAL_TOKENS=str(limit)) as s:
        assert s.json("run")["tasks_created"] == 20
        wait_for(lambda: s.queue.paused and not s.queue.in_flight())
        time.sleep(0.5)
        counts = s.statuses()
        done = counts["SUCCESS"]
        # Paused mid-way: the rows in flight when the limit was reached finished (at most the
        # queue's 2 at once past it), the rest wait uncharged.
        assert 6 <= done <= 8
        assert counts["PENDING"] == 20 - done
        charged = sum(spend_totals(ds_client).values())
        assert charged == done * TOKENS  # every finished row charged exactly once
        pending = [e for e in ds_client.query(kind=KIND).fetch() if e["status"] == "PENDING"]
        assert all(e["attempts"] == 0 for e in pending)
        note = ds_client.get(ds_client.key(PAUSE_KIND, QUEUE_PATH))
        assert note["code"] == "spend_limit"
        # The total when it paused: the rows still in flight then were charged after it.
        reached = re.fullmatch(r"spend limit reached: ([\d,]+) of 738 tokens", note["reason"])
        assert reached is not None
        assert limit <= int(reached.group(1).replace(",", "")) <= charged
        printed = "\n".join([capfd.readouterr().out, *s.outputs]).splitlines()
        logged = [json.loads(line) for line in printed if line.startswith('{"severity"')]
        spend_lines = [x for x in logged if x.get("event") == "spend_limit_reached"]
        assert spend_lines
        assert all(x["severity"] == "ERROR" for x in spend_lines)
        assert any(x.get("event") == "batch_paused" for x in logged)

        # The loader's summary and `status` say why, with the tokens so far and the projection.
        summary = s.json("run")
        assert summary["queue"]["paused_reason"] == note["reason"]
        assert summary["spend"] == {"tokens_so_far": charged, "max_total_tokens": limit}
        status = s.json("status")
        assert status["queue"]["paused_reason"] == note["reason"]
        assert status["spend"]["tokens_so_far"] == charged
        assert status["spend"]["projected_total"] == 20 * TOKENS
        assert f"projected {20 * TOKENS:,} once the {20 - done} rows left" in s.ok("status").output

        # Resuming before the limit is raised is refused, and changes nothing.
        refused = s.cli("resume")
        assert refused.exit_code == 1
        assert f"NOT resumed: spend limit reached: {charged:,} of {limit:,} tokens" in (
            refused.output
        )
        assert s.queue.paused
        assert s.statuses()["SUCCESS"] == done

        # The operator raises the limit (a redeploy: new settings), then resumes.
        monkeypatch.setenv("MAX_TOTAL_TOKENS", str(100 * TOKENS))
        wiring.reset()
        assert "queue dify: resumed" in s.ok("resume").output
        wait_for(lambda: s.statuses() == Counter({"SUCCESS": 20}))
    assert sum(spend_totals(ds_client).values()) == 20 * TOKENS
    assert len(s.llm.run_calls()) == 20  # no row ran twice
    assert all(e["attempts"] == 1 for e in ds_client.query(kind=KIND).fetch())


class _FakeLoader(BaseHTTPRequestHandler):
    """A loader that answers like a deployed one to a caller without the invoker role, and
    keeps the Authorization header it got."""

    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        self.send_response(403)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>Forbidden</html>")

    def log_message(self, *args: Any) -> None:
        return


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


class _TokenEndpoint(BaseHTTPRequestHandler):
    """Google's OAuth token endpoint: a user's refresh gets an access token and the id_token
    gcloud prints (`auth print-identity-token`); a service account's JWT grant for a target
    audience gets an identity token for it."""

    grants: ClassVar[list[dict[str, list[str]]]] = []

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
        self.grants.append(form)
        token = _unsigned_jwt({"exp": int(time.time()) + 3600, "iss": "stand-in"})
        answer = {"id_token": token, "access_token": "ya29.stand-in", "expires_in": 3600}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler], host: str) -> Iterator[str]:
    server = ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_actions_refuse_without_a_loader_url(monkeypatch, namespace, tmp_path):
    monkeypatch.delenv("LOADER_URL", raising=False)
    for action in (["run"], ["pause"], ["resume"], ["retry", "--all"]):
        result = CliRunner().invoke(cli, ["--project", PROJECT, "--namespace", namespace, *action])
        assert result.exit_code == 1, action
        assert "no loader URL: pass --loader-url or set LOADER_URL" in result.output
    # From .env (the local stack's), and a loader that does not answer is said plainly.
    nobody = f"http://127.0.0.1:{free_port()}"
    (tmp_path / ".env").write_text(f"LOADER_URL={nobody}\n")
    result = CliRunner().invoke(cli, ["--project", PROJECT, "--namespace", namespace, "pause"])
    assert result.exit_code == 1
    assert f"no answer from the loader at {nobody} (ConnectError)" in result.output


@pytest.mark.parametrize("who", ["user", "service_account"])
def test_a_deployed_loader_gets_an_identity_token_and_a_403_is_said_plainly(
    monkeypatch, tmp_path, who
):
    """A loader not on this machine gets an identity token minted from the operator's
    credentials as gcloud would: a user's from their refresh (application-default login), a
    service account's from a JWT grant for the loader's URL."""
    _FakeLoader.seen.clear()
    _TokenEndpoint.grants.clear()
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # where gcloud keeps the ADC file
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with http_server(_TokenEndpoint, "127.0.0.1") as token_host:
        token_uri = f"{token_host}/token"
        if who == "user":
            adc = {
                "type": "authorized_user",
                "client_id": "cid.apps.googleusercontent.com",
                "client_secret": "not-secret",
                "refresh_token": "1//refresh",
            }
            (tmp_path / "application_default_credentials.json").write_text(json.dumps(adc))
            # google-auth pins a user's token endpoint to Google's; point it at the stand-in.
            monkeypatch.setattr(
                google.oauth2.credentials, "_GOOGLE_OAUTH2_TOKEN_ENDPOINT", token_uri
            )
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
            info = {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": f"operator@{PROJECT}.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
            (tmp_path / "sa.json").write_text(json.dumps(info))
            monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "sa.json"))
        with http_server(_FakeLoader, "127.0.0.2") as loader:
            result = CliRunner().invoke(cli, ["--project", PROJECT, "run", "--loader-url", loader])
    assert result.exit_code == 1
    assert "no permission to invoke the loader (403)" in result.output
    assert "roles/run.invoker" in result.output
    (grant,) = _TokenEndpoint.grants
    if who == "user":
        assert grant["grant_type"] == ["refresh_token"]
    else:
        assert grant["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        claims = json.loads(base64.urlsafe_b64decode(grant["assertion"][0].split(".")[1] + "=="))
        assert claims["target_audience"] == loader
    (authorization,) = _FakeLoader.seen
    assert authorization.startswith("Bearer ey")
