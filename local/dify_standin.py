"""A local STAND-IN of Dify's workflow API, for tests and demos (never deployed).

Speaks the wire format of Dify 1.x as its server answers (not only as documented), checked
against Dify 1.14.1's own server by tests/dify_server/test_conformance.py (status, error
`code`, answer shape, stream event order): `POST /v1/workflows/run` (and
`/v1/workflows/{id}/run`) with a Bearer key, answering blocking JSON or a server-sent event
stream that opens with a ping; inputs checked against `form` with Dify's own rules and
messages (blocking: 400 `invalid_param`; streaming: one ping, then silence, as Dify does);
`GET /v1/workflows/run/{id}`, which knows every run started here, also those whose stream was
lost (after a stop it keeps saying `running`, as Dify 1.14.1 does); and
`POST /v1/workflows/tasks/{id}/stop`, which requires the `user` that started the run.
With `max_active_requests` set, runs past it are refused the way released 1.x servers do
(400 `invalid_param` "Too many requests...") or newer ones (429, `limit_status=429`).
Tests script its answers one call at a time (`replies`), or set a default `behaviour`.

Where it differs from Dify 1.14.1's server, on purpose (faults and timings that server cannot
be made to produce, or that would make tests slow):
- Scripted faults: cut-off answers, non-JSON bodies, HTML 429s, `error` events, hangs,
  trickled bytes, huge or hostile answers, upstream model errors, human-input pauses.
- Pings every `ping_interval` while a run lasts; Dify sends one when the stream opens only.
- A refused input's silent stream lasts `silent_stream_s` (Dify: about 300 s).
- Outputs are made up (`echo`), the run takes `latency`; nothing is executed.
- The limit counts requests in flight; Dify 1.x counts a streamed request twice, so with a
  limit of 1 it refuses every streamed request (`max_active_requests=1` here lets one run).
- Files are checked for their shape only: no file is fetched, so no host-down or
  detected-type refusal unless scripted.
- The last event of a streamed run is preceded by `node_finished` and an unknown event only
  (Dify also sends node_started, text_chunk and more).

    python -m local.dify_standin --port 8090 --api-key app-local --latency 0.5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shared.core.form_check import parse_form, refusal

Handler = Callable[["_RequestHandler", dict[str, Any]], None]


@dataclass
class Reply:
    """One scripted answer; `write` gets the handler and the parsed request body."""

    write: Handler
    name: str = "reply"


@dataclass
class Call:
    body: dict[str, Any]
    authorization: str
    path: str


def _run_data(
    outputs: dict[str, Any], status: str, error: str | None, run_id: str | None = None
) -> dict[str, Any]:
    run_id = run_id or str(uuid.uuid4())
    now = int(time.time())
    return {
        "id": run_id,
        "workflow_id": "standin-workflow",
        "status": status,
        "outputs": outputs,
        "error": error,
        "elapsed_time": 0.42,
        "total_tokens": 123,
        "total_steps": 3,
        "created_at": now,
        "finished_at": now,
    }


def finish(
    outputs: dict[str, Any] | None = None,
    *,
    status: str = "succeeded",
    error: str | None = None,
    delay: float = 0.0,
    opened: bool = False,
) -> Reply:
    """A run that takes the stand-in's latency (plus `delay`) and ends with `status`, answered
    blocking or streamed as the request asked (`opened`: on a stream already started)."""

    def write(h: _RequestHandler, body: dict[str, Any]) -> None:
        run_id, task_id = h.new_run(body)
        data = _run_data(outputs if outputs is not None else echo(body), status, error, run_id)
        if body.get("response_mode") == "streaming":
            if not opened:
                h.start_stream()
            h.event(
                {
                    "event": "workflow_started",
                    "task_id": task_id,
                    "workflow_run_id": run_id,
                    "data": {"id": run_id, "workflow_id": "standin-workflow"},
                }
            )
            h.run_for(h.server.stand_in.run_seconds() + delay)
            h.server.stand_in.complete(run_id, data)
            h.event({"event": "node_finished", "task_id": task_id, "data": {"node_id": "llm"}})
            h.event({"event": "future_event_nobody_knows", "data": {}})
            h.event(
                {
                    "event": "workflow_finished",
                    "task_id": task_id,
                    "workflow_run_id": run_id,
                    "data": data,
                }
            )
        else:
            h.pause(h.server.stand_in.run_seconds() + delay)
            h.server.stand_in.complete(run_id, data)
            h.send_json(200, {"workflow_run_id": run_id, "task_id": task_id, "data": data})

    return Reply(write, f"finish:{status}")


def slow_start(seconds: float) -> Reply:
    """A streamed run that starts late, as when Dify's worker is busy: a ping, silence for
    `seconds`, then the run as `finish` would send it."""

    def write(h: _RequestHandler, body: dict[str, Any]) -> None:
        h.start_stream()
        h.pause(seconds)
        finish(opened=True).write(h, body)

    return Reply(write, "slow_start")


def lost_stream(
    outputs: dict[str, Any] | None = None,
    *,
    status: str = "succeeded",
    error: str | None = None,
    finishes_after: float = 0.5,
) -> Reply:
    """The stream breaks right after `workflow_started`, while the run goes on in Dify and
    ends `finishes_after` seconds later (what usually happens when a connection drops)."""

    def write(h: _RequestHandler, body: dict[str, Any]) -> None:
        run_id, task_id = h.new_run(body)
        data = _run_data(outputs if outputs is not None else echo(body), status, error, run_id)
        stand_in = h.server.stand_in
        timer = threading.Timer(finishes_after, stand_in.complete, (run_id, data))
        timer.daemon = True
        timer.start()
        h.start_stream()
        h.event(
            {
                "event": "workflow_started",
                "task_id": task_id,
                "workflow_run_id": run_id,
                "data": {"id": run_id},
            }
        )
        h.close_connection = True

    return Reply(write, "lost_stream")


def human_input() -> Reply:
    """A workflow that reaches a human-input node: it pauses, and no workflow_finished comes."""

    def write(h: _RequestHandler, body: dict[str, Any]) -> None:
        run_id, task_id = h.new_run(body)
        paused = {**_run_data({}, "paused", None, run_id), "finished_at": None}
        h.server.stand_in.complete(run_id, paused)
        if body.get("response_mode") != "streaming":
            h.send_json(200, {"workflow_run_id": run_id, "task_id": task_id, "data": paused})
            return
        h.start_stream()
        h.event(
            {
                "event": "workflow_started",
                "task_id": task_id,
                "workflow_run_id": run_id,
                "data": {"id": run_id},
            }
        )
        h.event(
            {
                "event": "human_input_required",
                "task_id": task_id,
                "workflow_run_id": run_id,
                "data": {"node_id": "approve", "form_content": "Approve?"},
            }
        )
        h.event(
            {
                "event": "workflow_paused",
                "task_id": task_id,
                "workflow_run_id": run_id,
                "data": {
                    "workflow_run_id": run_id,
                    "status": "paused",
                    "paused_nodes": ["approve"],
                    "reasons": [{"type": "human_input_required", "node_id": "approve"}],
                },
            }
        )

    return Reply(write, "human_input")


def concurrency_limit(status: int = 400, limit: int = 2) -> Reply:
    """The app's concurrent-run limit, as released 1.x servers (400) or newer ones (429) say it."""
    code = "invalid_param" if status == 400 else "too_many_requests"
    return http_error(status, code, concurrency_message(limit))


def concurrency_message(limit: int) -> str:
    return (
        "Too many requests. Please try again later. The current maximum concurrent requests "
        f"allowed for standin-app is {limit}."
    )


def quota_exceeded() -> Reply:
    return http_error(429, "rate_limit_error", "Workflow execution quota limit reached.")


UPSTREAM_ERRORS = {
    "rate_limit": "[openai] Rate Limit Error, Error code: 429 - Rate limit reached for gpt-4o "
    "on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000.",
    # A used-up quota comes as a rate-limit error too (OpenAI: 429 `insufficient_quota`).
    "quota": "[openai] Rate Limit Error, Error code: 429 - {'error': {'message': 'You exceeded "
    "your current quota, please check your plan and billing details.', 'type': "
    "'insufficient_quota', 'param': None, 'code': 'insufficient_quota'}}",
    "credentials": "[openai] Incorrect model credentials provided, please check and try again.",
    "connection": "[anthropic] Connection Error, Connection error.",
    "unavailable": "[openai] Server Unavailable Error, The server is overloaded",
}


def upstream_error(kind: str, *, via: str = "http") -> Reply:
    """A model provider's failure inside the run, as Dify formats it: a 400
    `completion_request_error` (via="http"), or a run that ends `failed` (via="run")."""
    message = UPSTREAM_ERRORS[kind]
    if via == "run":
        return finish(status="failed", error=message)
    return http_error(400, "completion_request_error", message)


def http_error(
    status: int, code: str, message: str, *, retry_after: str | None = None, html: bool = False
) -> Reply:
    def write(h: _RequestHandler, body: dict[str, Any]) -> None:
        headers = {"Retry-After": retry_after} if retry_after else {}
        if html:
            h.send_raw(status, b"<html><body>Too Many Requests</body></html>", "text/html", headers)
        else:
            h.send_json(status, {"code": code, "message": message, "status": status}, headers)

    return Reply(write, f"http:{status}")


def stream_error(code: str, message: str, status: int = 400) -> Reply:
    def write(h: _RequestHandler, body: dict[str, Any]) -> None:
        h.start_stream()
        h.event({"event": "workflow_started", "task_id": "t-err", "data": {"id": "r-err"}})
        h.event(
            {
                "event": "error",
                "workflow_run_id": "r-err",
                "code": code,
                "message": message,
                "status": status,
            }
        )

    return Reply(write, "stream_error")


def cut_off() -> Reply:
    """The connection drops halfway through the answer."""

    def write(h: _RequestHandler, body: dict[str, Any]) -> None:
        if body.get("response_mode") == "streaming":
            h.start_stream()
            h.event({"event": "workflow_started", "task_id": "t-cut", "data": {"id": "r-cut"}})
        else:
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "5000")
            h.end_headers()
            h.wfile.write(b'{"workflow_run_id": "r-cut", "data": {"sta')
        h.close_connection = True

    return Reply(write, "cut_off")


def not_json() -> Reply:
    def write(h: _RequestHandler, body: dict[str, Any]) -> None:
        h.send_raw(200, b"<html>gateway says hello</html>", "application/json")

    return Reply(write, "not_json")


def hang(seconds: float, *, ping_every: float = 0.2) -> Reply:
    """Answers nothing (blocking) or only pings (streaming) for `seconds`."""

    def write(h: _RequestHandler, body: dict[str, Any]) -> None:
        if body.get("response_mode") == "streaming":
            h.server.stand_in.register("r-hang", "t-hang", body)
            h.start_stream()
            h.event(
                {
                    "event": "workflow_started",
                    "task_id": "t-hang",
                    "workflow_run_id": "r-hang",
                    "data": {"id": "r-hang"},
                }
            )
            end = time.monotonic() + seconds
            while time.monotonic() < end and not h.server.stopping.is_set():
                h.ping()
                h.pause(ping_every)
        else:
            h.pause(seconds)
            h.send_json(200, {"data": _run_data({"text": "too late"}, "succeeded", None)})

    return Reply(write, "hang")


def finish_raw(data_json: str) -> Reply:
    """A finished run whose `data` is given as raw JSON text, so hostile answers (NaN, lone
    surrogate escapes, deep nesting) reach the client exactly as a server could send them."""

    def write(h: _RequestHandler, body: dict[str, Any]) -> None:
        run_id, task_id = h.new_run(body)
        head = f'"workflow_run_id": "{run_id}", "task_id": "{task_id}"'
        if body.get("response_mode") == "streaming":
            h.start_stream()
            h.event({"event": "workflow_started", "task_id": task_id, "workflow_run_id": run_id})
            h.raw_event(f'{{"event": "workflow_finished", {head}, "data": {data_json}}}')
        else:
            payload = f'{{{head}, "data": {data_json}}}'.encode()
            h.send_raw(200, payload, "application/json")

    return Reply(write, "finish_raw")


def chatty(chunks: int, chunk_text: str, outputs: dict[str, Any]) -> Reply:
    """A streamed run that sends `chunks` text_chunk events (progress), then small outputs."""

    def write(h: _RequestHandler, body: dict[str, Any]) -> None:
        run_id, task_id = h.new_run(body)
        data = _run_data(outputs, "succeeded", None, run_id)
        h.start_stream()
        h.event({"event": "workflow_started", "task_id": task_id, "workflow_run_id": run_id})
        chunk = json.dumps(
            {"event": "text_chunk", "task_id": task_id, "data": {"text": chunk_text}},
            ensure_ascii=False,
        )
        for _ in range(chunks):
            h.raw_event(chunk)
        h.server.stand_in.complete(run_id, data)
        h.event(
            {
                "event": "workflow_finished",
                "task_id": task_id,
                "workflow_run_id": run_id,
                "data": data,
            }
        )

    return Reply(write, "chatty")


def trickle(seconds: float, *, every: float = 0.25) -> Reply:
    """Blocking: headers at once, then one byte of the answer every `every` seconds for
    `seconds` (a read timeout per read never fires). Sets `trickle_cut` when the client left."""

    def write(h: _RequestHandler, body: dict[str, Any]) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end and not h.server.stopping.is_set():
                h.wfile.write(b" ")
                h.wfile.flush()
                h.pause(every)
        except (BrokenPipeError, ConnectionResetError):
            h.server.stand_in.trickle_cut = True

    return Reply(write, "trickle")


DEMO_FORM: list[dict[str, Any]] = [
    {"text-input": {"label": "Title", "variable": "title", "required": True, "max_length": 200}},
    {
        "select": {
            "label": "Language",
            "variable": "language",
            "required": False,
            "options": ["ko", "en", "ja", "zh", "es"],
        }
    },
]


def demo_reply() -> Reply:
    """The demo's workflow: `title` is required (an empty one is refused as Dify refuses a
    missing required variable); a title that mentions a rate limit meets the model provider's
    rate limit once (a transient failure, retried); every other row is answered."""

    def write(h: _RequestHandler, body: dict[str, Any]) -> None:
        inputs = body.get("inputs") or {}
        title = str(inputs.get("title") or "").strip()
        stand_in = h.server.stand_in
        if not title:
            http_error(400, "invalid_param", "title is required in input form").write(h, body)
            return
        if "rate limit" in title.lower() and stand_in.first_time(title):
            upstream_error("rate_limit").write(h, body)
            return
        answer = {
            "answer": f"[Dify stand-in] {title} → {len(title)} characters, language "
            f"{inputs.get('language') or '?'}",
            "words": len(title.split()),
        }
        finish(answer).write(h, body)

    return Reply(write, "demo")


def echo(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("inputs") or {}
    return {"text": "processed: " + json.dumps(inputs, ensure_ascii=False), "inputs": inputs}


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def pause(self, seconds: float) -> None:
        self.server.stopping.wait(seconds)

    def send_raw(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self.send_raw(
            status, json.dumps(payload, ensure_ascii=False).encode(), "application/json", headers
        )

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.ping()  # Dify's first event, before its worker has started anything

    def event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode())
        self.wfile.flush()

    def ping(self) -> None:
        self.wfile.write(b"event: ping\n\n")
        self.wfile.flush()

    def refuse_inputs(self, body: dict[str, Any], reason: str) -> None:
        """As Dify 1.x: blocking, a 400 with the reason; streaming, its worker refuses the
        inputs before any run exists, so the stream gets one ping and then nothing until it
        is closed (the reason is only in Dify's log)."""
        if body.get("response_mode") != "streaming":
            self.send_json(400, {"code": "invalid_param", "message": reason, "status": 400})
            return
        self.start_stream()
        self.pause(self.server.stand_in.silent_stream_s)

    def raw_event(self, data: str) -> None:
        self.wfile.write(f"data: {data}\n\n".encode("utf-8", "surrogatepass"))
        self.wfile.flush()

    def run_for(self, seconds: float) -> None:
        """Let a streamed run take `seconds`, pinging every `ping_interval` like Dify."""
        end = time.monotonic() + seconds
        interval = self.server.stand_in.ping_interval
        while (left := end - time.monotonic()) > 0 and not self.server.stopping.is_set():
            self.pause(min(left, interval))
            if end - time.monotonic() > 0:
                self.ping()

    def new_run(self, body: dict[str, Any]) -> tuple[str, str]:
        run_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.server.stand_in.register(run_id, task_id, body)
        return run_id, task_id

    def authorized(self) -> bool:
        stand_in = self.server.stand_in
        if stand_in.api_key is None or self.headers.get("Authorization") == (
            f"Bearer {stand_in.api_key}"
        ):
            return True
        self.send_json(
            401, {"code": "unauthorized", "message": "Access token is invalid", "status": 401}
        )
        return False

    def do_GET(self) -> None:
        stand_in = self.server.stand_in
        stand_in.record(Call({}, self.headers.get("Authorization", ""), self.path))
        if not self.authorized():
            return
        if self.path.rstrip("/") == "/v1/parameters":
            # As Dify answers it: the form is a list of one-key objects, control -> spec.
            self.send_json(
                200,
                {
                    "user_input_form": stand_in.form,
                    "file_upload": {"image": {"enabled": False}},
                    "system_parameters": {"file_size_limit": 15},
                },
            )
            return
        prefix = "/v1/workflows/run/"
        run = (
            stand_in.run_detail(self.path[len(prefix) :]) if self.path.startswith(prefix) else None
        )
        if run is None:
            self.send_json(
                404, {"code": "not_found", "message": "Workflow run not found.", "status": 404}
            )
            return
        self.send_json(200, run)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self.send_json(
                400,
                {
                    "code": "bad_request",
                    "message": "The browser (or proxy) sent a request that this server could "
                    "not understand.",
                    "status": 400,
                },
            )
            return
        stand_in = self.server.stand_in
        auth = self.headers.get("Authorization", "")
        stand_in.record(Call(body, auth, self.path))
        if not self.authorized():
            return
        if self.path.startswith("/v1/workflows/tasks/") and self.path.endswith("/stop"):
            if not body.get("user"):
                self.send_json(
                    400,
                    {
                        "code": "invalid_param",
                        "message": "Arg user must be provided.",
                        "status": 400,
                    },
                )
                return
            stand_in.stop_task(self.path.split("/")[-2], str(body["user"]))
            self.send_json(200, {"result": "success"})
            return
        if not self.path.rstrip("/").endswith("/run"):
            self.send_json(404, {"code": "not_found", "message": "no such endpoint", "status": 404})
            return
        if not body.get("user") or not isinstance(body.get("inputs"), dict):
            message = (
                "1 validation error for WorkflowRunPayload\ninputs\n  Input should be a valid "
                "dictionary"
                if body.get("user")
                else "Arg user must be provided."
            )
            self.send_json(400, {"code": "invalid_param", "message": message, "status": 400})
            return
        if not stand_in.take_slot():
            # Dify checks its app's limit before the run starts; no run, no run id.
            concurrency_limit(stand_in.limit_status, stand_in.max_active_requests).write(self, body)
            return
        # Dify's own rules and words (shared/core/form_check.py, checked against the server).
        refused = refusal(parse_form({"user_input_form": stand_in.form}), body["inputs"])
        if refused is not None:
            try:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.refuse_inputs(body, refused)
            finally:
                stand_in.running(-1)
            return
        try:
            # The client may give up first: timeouts are part of what tests exercise.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stand_in.next_reply().write(self, body)
        finally:
            stand_in.running(-1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stand_in: DifyStandIn
    stopping: threading.Event


@dataclass
class DifyStandIn:
    """Start with `start()`; `url` is the workflow-run endpoint to put in DIFY_API_ENDPOINT."""

    api_key: str | None = "app-standin-key"
    latency: float = 0.0  # how long a finished run takes
    latency_jitter: float = 0.0  # ± this much, at random
    ping_interval: float = 10.0
    # The workflow's input form, served at GET /v1/parameters (empty: no variables declared).
    form: list[dict[str, Any]] = field(default_factory=list)
    max_active_requests: int = 0  # 0: unlimited, Dify's self-hosted default
    limit_status: int = 400  # how a refusal past the limit is answered: 400 (1.x) or 429
    silent_stream_s: float = 300.0  # how long a stream of refused inputs stays open, silent
    behaviour: Callable[[], Reply] = field(default=finish)
    calls: list[Call] = field(default_factory=list)
    replies: deque[Reply] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: _Server | None = None
    in_flight: int = 0
    peak_in_flight: int = 0  # most workflow runs answered at the same time
    refused: int = 0  # runs refused past max_active_requests
    trickle_cut: bool = False  # a trickled answer was abandoned by the client
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> detail
    _task_runs: dict[str, tuple[str, str]] = field(default_factory=dict)  # task -> (run, user)
    _seen: set[str] = field(default_factory=set)
    stopped_runs: set[str] = field(default_factory=set)  # run ids a stop call reached

    def start(self, host: str = "127.0.0.1", port: int = 0) -> DifyStandIn:
        server = _Server((host, port), _RequestHandler)
        server.stand_in = self
        server.stopping = threading.Event()
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True, name="dify-standin").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stopping.set()
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/v1"

    @property
    def url(self) -> str:
        return f"{self.base_url}/workflows/run"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def next_reply(self) -> Reply:
        with self._lock:
            return self.replies.popleft() if self.replies else self.behaviour()

    def run_seconds(self) -> float:
        if not self.latency_jitter:
            return self.latency
        jitter = random.uniform(-self.latency_jitter, self.latency_jitter)  # noqa: S311 - timing
        return max(0.0, self.latency + jitter)

    def first_time(self, key: str) -> bool:
        with self._lock:
            seen = key in self._seen
            self._seen.add(key)
            return not seen

    def take_slot(self) -> bool:
        with self._lock:
            if self.max_active_requests and self.in_flight >= self.max_active_requests:
                self.refused += 1
                return False
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return True

    def register(self, run_id: str, task_id: str, body: dict[str, Any]) -> None:
        detail = {
            **_run_data({}, "running", None, run_id),
            # Dify answers the inputs as JSON text, with its sys.* keys.
            "inputs": json.dumps({**(body.get("inputs") or {}), "sys.user_id": body.get("user")}),
            "outputs": None,
            "finished_at": None,
        }
        with self._lock:
            self.runs[run_id] = detail
            self._task_runs[task_id] = (run_id, str(body.get("user")))

    def complete(self, run_id: str, data: dict[str, Any]) -> None:
        with self._lock:
            if run_id in self.runs and self.runs[run_id]["status"] == "running":
                self.runs[run_id] = {**self.runs[run_id], **data}

    def stop_task(self, task_id: str, user: str) -> None:
        """Noted in `stopped_runs`; like Dify 1.14.1, the run's lookup keeps saying
        `running` after a stop (its record is not updated)."""
        with self._lock:
            run_id, started_by = self._task_runs.get(task_id, ("", ""))
            if run_id in self.runs and started_by == user:
                self.stopped_runs.add(run_id)

    def run_detail(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            run = self.runs.get(run_id)
            return dict(run) if run is not None else None

    def lookup_calls(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path.startswith("/v1/workflows/run/")]

    def running(self, change: int) -> None:
        with self._lock:
            self.in_flight += change
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def run_calls(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path.rstrip("/").endswith("/run")]

    def stop_calls(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path.endswith("/stop")]


def main() -> None:
    parser = argparse.ArgumentParser(description="Local stand-in of Dify's workflow API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--api-key", default="app-standin-key")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per workflow run")
    parser.add_argument("--ping-interval", type=float, default=10.0)
    parser.add_argument(
        "--max-active-requests", type=int, default=0, help="the app's concurrency limit (0: none)"
    )
    args = parser.parse_args()
    stand_in = DifyStandIn(
        api_key=args.api_key,
        latency=args.latency,
        ping_interval=args.ping_interval,
        max_active_requests=args.max_active_requests,
    ).start(args.host, args.port)
    print(f"Dify stand-in: DIFY_API_ENDPOINT={stand_in.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stand_in.stop()


if __name__ == "__main__":
    main()
