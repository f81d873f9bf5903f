"""WorkflowClient: runs a Dify workflow over HTTP, blocking or streaming (server-sent events).

One client per function instance; httpx.Client is safe to share between threads.
`timeout_s` bounds the whole call, including a stream that sends nothing but pings.
"""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, cast

import httpx
from httpx_sse import EventSource

from shared.errors import PermanentError, TransientError
from shared.logs import get_logger
from shared.model import WorkflowRun
from shared.outcomes import classify_http_error, classify_stream_error, parse_run

log = get_logger("dify")

# Dify pings every 10 s while a streamed workflow runs; a longer silence means trouble. This also
# bounds how far past the overall deadline a silent stream can run (the deadline is checked
# between chunks).
STREAM_READ_TIMEOUT_S = 30.0
_ERROR_BODY_BYTES = 64 * 1024


class _GuardedResponse:
    """What EventSource reads (headers, iter_text), with the size cap and deadline applied."""

    def __init__(self, response: httpx.Response, chunks: Iterator[bytes]) -> None:
        self.headers = response.headers
        self._chunks = chunks

    def iter_text(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for chunk in self._chunks:
            yield decoder.decode(chunk)
        yield decoder.decode(b"", final=True)


class WorkflowClient:
    def __init__(
        self,
        *,
        http: httpx.Client,
        endpoint: str,
        api_key: str,
        response_mode: Literal["blocking", "streaming"],
        user: str,
        timeout_s: float,
        max_response_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._endpoint = endpoint
        self._api_key = api_key
        self._mode = response_mode
        self._user = user
        self._timeout_s = timeout_s
        self._max_bytes = max_response_bytes
        self._clock = clock

    def run(self, inputs: dict[str, Any]) -> WorkflowRun:
        """Run the workflow once. Raises TransientError (retry) or PermanentError (give up)."""
        deadline = self._clock() + self._timeout_s
        body = {"inputs": inputs, "response_mode": self._mode, "user": self._user}
        state: dict[str, str] = {}
        try:
            if self._mode == "streaming":
                return self._run_streaming(body, deadline, state)
            return self._run_blocking(body, deadline)
        except httpx.TimeoutException:
            self._stop_quietly(state.get("task_id"))
            raise TransientError(
                f"no answer from Dify within DIFY_API_TIMEOUT_MINUTES ({self._timeout_s:g} s)",
                code="timeout",
            ) from None
        except TransientError as exc:
            if exc.code == "timeout":
                self._stop_quietly(state.get("task_id"))
            raise
        except httpx.HTTPError as exc:
            # Connection refused or reset, a cut-off stream, a protocol error: all worth a retry.
            raise TransientError(
                f"connection to Dify failed: {type(exc).__name__}: {exc}", code="connection_error"
            ) from None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"}

    def _timeout(self, deadline: float, read_cap: float | None = None) -> httpx.Timeout:
        remaining = max(0.001, deadline - self._clock())
        read = min(remaining, read_cap) if read_cap else remaining
        return httpx.Timeout(read, connect=min(10.0, remaining), write=min(30.0, remaining))

    def _chunks(self, response: httpx.Response, deadline: float, limit: int) -> Iterator[bytes]:
        total = 0
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > limit:
                raise PermanentError(
                    f"Dify's answer passed {limit} bytes (DIFY_MAX_RESPONSE_BYTES) and was not "
                    "read further; make the workflow return less, or raise the limit",
                    code="response_too_large",
                )
            if self._clock() > deadline:
                raise TransientError(
                    f"Dify's answer did not finish within DIFY_API_TIMEOUT_MINUTES "
                    f"({self._timeout_s:g} s)",
                    code="timeout",
                )
            yield chunk

    def _error_from(self, response: httpx.Response, deadline: float) -> Exception:
        limit = _ERROR_BODY_BYTES
        raw = bytearray()
        for chunk in response.iter_bytes():
            raw.extend(chunk[: limit - len(raw)])
            if len(raw) >= limit or self._clock() > deadline:
                break
        return classify_http_error(
            response.status_code,
            raw.decode("utf-8", errors="replace"),
            response.headers.get("retry-after"),
        )

    def _run_blocking(self, body: dict[str, Any], deadline: float) -> WorkflowRun:
        with self._http.stream(
            "POST",
            self._endpoint,
            json=body,
            headers=self._headers(),
            timeout=self._timeout(deadline),
        ) as response:
            if response.status_code != 200:
                raise self._error_from(response, deadline)
            return self._read_run(response, deadline)

    def _read_run(self, response: httpx.Response, deadline: float) -> WorkflowRun:
        """A whole JSON answer (blocking mode, or a proxy that answered a stream with one)."""
        raw = b"".join(self._chunks(response, deadline, self._max_bytes))
        try:
            payload = json.loads(raw)
        except ValueError:
            kind = response.headers.get("content-type") or "no content type"
            raise TransientError(
                f"Dify's answer ({kind}, {len(raw)} bytes) is not JSON; it was malformed or "
                "cut off",
                code="malformed",
            ) from None
        return parse_run(payload)

    def _run_streaming(
        self, body: dict[str, Any], deadline: float, state: dict[str, str]
    ) -> WorkflowRun:
        headers = {**self._headers(), "Accept": "text/event-stream"}
        with self._http.stream(
            "POST",
            self._endpoint,
            json=body,
            headers=headers,
            timeout=self._timeout(deadline, STREAM_READ_TIMEOUT_S),
        ) as response:
            if response.status_code != 200:
                raise self._error_from(response, deadline)
            if "text/event-stream" not in response.headers.get("content-type", ""):
                # Some proxies and Dify versions answer a streaming call with one JSON document.
                return self._read_run(response, deadline)
            guarded = _GuardedResponse(response, self._chunks(response, deadline, self._max_bytes))
            for sse in EventSource(cast(httpx.Response, guarded)).iter_sse():
                if sse.event == "ping" or not sse.data.strip():
                    continue
                try:
                    event = json.loads(sse.data)
                except ValueError:
                    raise TransientError(
                        "an event in Dify's stream is not JSON", code="malformed"
                    ) from None
                if not isinstance(event, dict):
                    continue
                kind = event.get("event")
                if kind == "workflow_started" and event.get("task_id"):
                    state["task_id"] = str(event["task_id"])
                elif kind == "workflow_finished":
                    return parse_run(event)
                elif kind == "error":
                    raise classify_stream_error(event)
                # Every other event (node_*, text_chunk, tts_*, iteration_*, ...) is progress.
        raise TransientError(
            "Dify's stream ended before its workflow_finished event (cut off)", code="cut_off"
        )

    def _stop_quietly(self, task_id: str | None) -> None:
        """Ask Dify to stop a streamed run we gave up on, so it stops spending tokens."""
        marker = self._endpoint.rfind("/workflows/")
        if not task_id or marker < 0:
            return
        url = f"{self._endpoint[:marker]}/workflows/tasks/{task_id}/stop"
        try:
            self._http.post(url, json={"user": self._user}, headers=self._headers(), timeout=5.0)
        except httpx.HTTPError as exc:
            log.warning("could not stop the Dify task %s: %s", task_id, type(exc).__name__)
