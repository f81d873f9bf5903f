"""The stand-in (local/dify_standin.py) answers as Dify 1.14.1's own server does: the same
requests go to both, and their status, error `code`, answer shape and stream event order must
match. Where the stand-in must differ, its docstring lists why."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from local.dify_standin import DifyStandIn
from tests.dify_server.conftest import DifyServer

pytestmark = pytest.mark.dify_server
KEPT = {"ping", "workflow_started", "workflow_finished", "error"}


@pytest.fixture(scope="module")
def both(dify_server: DifyServer) -> Iterator[dict[str, tuple[str, str]]]:
    """name -> (base URL, key): the real server's `echo` app and a stand-in serving its form."""
    key = dify_server.key("echo")
    form = httpx.get(
        f"{dify_server.url}/parameters", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ).json()["user_input_form"]
    stand_in = DifyStandIn(api_key="app-conformance-key", form=form, silent_stream_s=5).start()
    try:
        yield {"dify": (dify_server.url, key), "stand-in": (stand_in.base_url, stand_in.api_key)}
    finally:
        stand_in.stop()


def shape(value: Any) -> Any:
    """The answer's shape: keys and kinds, not values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items()) if k != "outputs"}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__ if value is not None else "null"


def call(
    target: tuple[str, str],
    method: str,
    path: str,
    body: Any = None,
    *,
    auth: str | None = "key",
    raw: bytes | None = None,
) -> tuple[int, str | None, Any]:
    base, key = target
    headers = {"Content-Type": "application/json"}
    if auth == "key":
        headers["Authorization"] = f"Bearer {key}"
    elif auth is not None:
        headers["Authorization"] = auth
    content = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    answer = httpx.request(method, base + path, content=content, headers=headers, timeout=60)
    try:
        payload = answer.json()
    except ValueError:
        payload = None
    code = payload.get("code") if isinstance(payload, dict) else None
    return answer.status_code, code, payload


def run_body(inputs: dict[str, Any], mode: str = "blocking", **extra: Any) -> dict[str, Any]:
    return {"inputs": inputs, "response_mode": mode, "user": "conformance", **extra}


CASES = {
    "wrong key": ("POST", "/workflows/run", run_body({"question": "q"}), "Bearer app-nope"),
    "no key": ("POST", "/workflows/run", run_body({"question": "q"}), None),
    "no user": ("POST", "/workflows/run", {"inputs": {"question": "q"}}, "key"),
    "inputs not an object": ("POST", "/workflows/run", run_body("x"), "key"),  # type: ignore[arg-type]
    "required missing": ("POST", "/workflows/run", run_body({}), "key"),
    "too long": ("POST", "/workflows/run", run_body({"question": "가" * 257}), "key"),
    "longest accepted": ("POST", "/workflows/run", run_body({"question": "가" * 256}), "key"),
    "1e5 is no number": (
        "POST", "/workflows/run", run_body({"question": "q", "delay": "1e5"}), "key"
    ),
    "1_000 is a number": (
        "POST", "/workflows/run", run_body({"question": "q", "delay": "0_0"}), "key"
    ),
    "unknown inputs ignored": (
        "POST", "/workflows/run", run_body({"question": "q", "extra": "x"}), "key"
    ),
    "unknown run": ("GET", f"/workflows/run/{uuid.uuid4()}", None, "key"),
    "stop without user": ("POST", "/workflows/tasks/nope/stop", {}, "key"),
    "stop an unknown task": ("POST", "/workflows/tasks/nope/stop", {"user": "u"}, "key"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_the_same_request_gets_the_same_status_code_and_shape(both, case):
    method, path, body, auth = CASES[case]
    answers = {name: call(target, method, path, body, auth=auth) for name, target in both.items()}
    dify, stand_in = answers["dify"], answers["stand-in"]
    assert stand_in[:2] == dify[:2], (case, dify, stand_in)
    assert shape(stand_in[2]) == shape(dify[2]), case
    if dify[1] == "invalid_param" and "input form" in dify[2]["message"]:
        assert stand_in[2]["message"] == dify[2]["message"]  # Dify's own reason, word for word


def test_a_body_that_is_not_json_is_a_bad_request(both):
    for target in both.values():
        assert call(target, "POST", "/workflows/run", raw=b"{not json")[:2] == (400, "bad_request")


def events(target: tuple[str, str], body: dict[str, Any], wait: float) -> list[dict[str, Any]]:
    """The stream's events (pings as {"event": "ping"}), until it ends or is silent `wait` s."""
    base, key = target
    seen: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    timeout = httpx.Timeout(60, read=wait)
    try:
        with httpx.stream(
            "POST", f"{base}/workflows/run", json=body, headers=headers, timeout=timeout
        ) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            for line in answer.iter_lines():
                if line.startswith("event: ping"):
                    seen.append({"event": "ping"})
                elif line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
    except httpx.ReadTimeout:
        seen.append({"event": "(silence)"})
    return seen


def order(stream: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in stream if e["event"] in KEPT | {"(silence)"}]


def test_a_streamed_run_sends_the_same_events_in_the_same_order(both):
    streams = {
        n: events(t, run_body({"question": "안녕"}, "streaming"), 30) for n, t in both.items()
    }
    assert order(streams["stand-in"]) == order(streams["dify"])
    assert order(streams["dify"]) == ["ping", "workflow_started", "workflow_finished"]
    for stream in streams.values():
        started = next(e for e in stream if e["event"] == "workflow_started")
        assert {"task_id", "workflow_run_id", "data"} <= set(started)
    finished = {
        n: next(e for e in s if e["event"] == "workflow_finished") for n, s in streams.items()
    }
    assert set(finished["stand-in"]) == set(finished["dify"])
    assert set(finished["stand-in"]["data"]) >= set(finished["dify"]["data"]) - {
        "created_by", "files", "exceptions_count", "outputs"
    }  # fmt: skip


def test_a_refused_input_in_streaming_mode_is_a_ping_then_silence(both):
    for target in both.values():
        stream = events(target, run_body({}, "streaming"), 4)
        assert order(stream) == ["ping", "(silence)"]


def test_a_finished_run_is_looked_up_with_the_same_shape(both):
    details = {}
    for name, target in both.items():
        status, _, blocking = call(target, "POST", "/workflows/run", run_body({"question": "q"}))
        assert status == 200
        run_id = blocking["workflow_run_id"]
        status, _, details[name] = call(target, "GET", f"/workflows/run/{run_id}")
        assert status == 200
        assert details[name]["status"] == "succeeded"
        assert isinstance(details[name]["inputs"], str)  # JSON text, sys.* keys included
    assert shape(details["stand-in"]) == shape(details["dify"])


def test_the_input_form_has_the_same_shape(both):
    forms = {n: call(t, "GET", "/parameters")[2]["user_input_form"] for n, t in both.items()}
    assert forms["stand-in"] == forms["dify"]
