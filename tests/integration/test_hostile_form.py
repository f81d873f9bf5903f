"""A hostile or broken `GET /v1/parameters` answer (issue #18, point 8): read with a size cap,
typed strictly, refused with an error naming the problem; the loader goes on without the
check only when the operator says so (CHECK_INPUTS=false)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from local.cloud_tasks_standin import CloudTasksStandIn
from local.sheets_standin import SheetsStandIn
from shared.adapters.dify import FormClient
from shared.adapters.secrets import ApiKey
from shared.core.errors import ConfigError
from shared.core.model import KIND
from tests.conftest import PROJECT
from tests.support.servers import serve_function

KEY = "app-hostile-form-key"
HUGE = 300 * 1024 * 1024


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body: bytes = b"{}"
    huge = False
    sent = 0

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if not _Hostile.huge:
            self.send_header("Content-Length", str(len(_Hostile.body)))
            self.end_headers()
            self.wfile.write(_Hostile.body)
            return
        self.send_header("Content-Length", str(HUGE))
        self.end_headers()
        chunk = b'{"user_input_form": [' + b" " * (1024 * 1024)
        try:
            while _Hostile.sent < HUGE:
                self.wfile.write(chunk)
                _Hostile.sent += len(chunk)
        except OSError:
            return  # the client stopped reading: what a size cap does


@pytest.fixture
def hostile() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hostile.huge, _Hostile.sent = False, 0
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/workflows/run"
    server.shutdown()
    server.server_close()


def serve(body: bytes) -> None:
    _Hostile.body = body


NESTED = b'{"user_input_form": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (NESTED, "nested too deeply"),
        (b'{"user_input_form": [{"select": {"variable": "s", "options": 5}}]}', "`options`"),
        (
            b'{"user_input_form": [{"select": {"variable": "s", "required": "false"}}]}',
            "`required`",
        ),
        (b'{"user_input_form": "all of them"}', "must be a list"),
        (b"[1, 2]", "not an object"),
    ],
)
def test_a_hostile_form_is_refused_naming_the_problem(hostile, body, needle):
    serve(body)
    with httpx.Client() as http:
        client = FormClient(http=http, endpoint=hostile, api_key=ApiKey(read=lambda: KEY))
        with pytest.raises(ConfigError) as caught:
            client.form()
    assert needle in caught.value.message
    assert "CHECK_INPUTS=false" in caught.value.message


def test_a_huge_form_is_not_read_past_the_cap(hostile):
    _Hostile.huge = True
    with httpx.Client() as http:
        client = FormClient(http=http, endpoint=hostile, api_key=ApiKey(read=lambda: KEY))
        with pytest.raises(ConfigError) as caught:
            client.form()
    assert "bytes and was not read further" in caught.value.message
    assert _Hostile.sent < 50 * 1024 * 1024  # stopped long before 300 MB


@pytest.mark.emulator
@pytest.mark.parametrize("check", ["true", "false"])
def test_the_loader_stops_with_the_reason_unless_told_to_run_unchecked(
    monkeypatch, namespace, ds_client, hostile, check
):
    serve(b'{"user_input_form": [{"select": {"variable": "s", "options": 5}}]}')
    sheets = SheetsStandIn({"book": {"Sheet1": [["id", "s"], ["a", "x"]]}}).start()
    tasks = CloudTasksStandIn().start()
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "DATASTORE_NAMESPACE": namespace,
        "SPREADSHEET_ID": "book",
        "SHEET_NAME": "Sheet1",
        "SHEETS_API_ENDPOINT": sheets.endpoint,
        "TASKS_LOCATION": "asia-northeast3",
        "TASKS_QUEUE": "dify",
        "WORKER_URL": "http://127.0.0.1:9/",
        "CLOUD_TASKS_EMULATOR_HOST": tasks.host,
        "DIFY_API_ENDPOINT": hostile,
        "DIFY_API_KEY": KEY,
        "CHECK_INPUTS": check,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        with serve_function("loader/main.py", "load_sheet") as loader:
            answer = httpx.post(loader, timeout=60)
    finally:
        tasks.stop()
        sheets.stop()
    if check == "true":
        assert answer.status_code == 500  # a setting to fix (ConfigError), said in `error`
        assert "`options` must be a list of strings, got int" in answer.json()["error"]
        assert list(ds_client.query(kind=KIND).fetch()) == []
    else:
        assert answer.status_code == 200
        assert answer.json()["tasks_created"] == 1
