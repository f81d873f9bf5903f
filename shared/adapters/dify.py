"""WorkflowClient: runs a Dify workflow over HTTP, blocking or streaming (server-sent events).

One client per workflow per function instance; httpx.Client is safe to share between threads.
Every call is bounded by a wall-clock deadline: the run, the lookups of a lost stream and the
stop call all end by it (a watchdog shuts the socket down when it passes, so a server that
trickles bytes cannot hold a worker past it).

A streamed run whose connection breaks after `workflow_started` usually goes on in Dify: the
client then looks the run up (`GET /v1/workflows/run/{id}`) until it ends or the deadline
passes, rather than starting it again and paying for it twice.
"""

from __future__ import annotations

import codecs
import contextlib
import heapq
import ipaddress
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import unquote, urlsplit

import httpx
from httpx_sse import EventSource

from shared.adapters.logs import get_logger
from shared.adapters.secrets import ApiKey
from shared.core.errors import (
    AppWideError,
    BatchError,
    CapacityError,
    ConfigError,
    PermanentError,
    TransientError,
)
from shared.core.form_check import (
    FormError,
    Variable,
    detected_type,
    parse_form,
    refusal,
    remote_files,
    without_blanks,
)
from shared.core.model import WorkflowRun
from shared.core.outcomes import (
    STILL_RUNNING,
    classify_http_error,
    classify_stream_error,
    concurrency_limit,
    limit_of_one_streaming,
    parse_run,
    paused_for_human_input,
)

log = get_logger("dify")

# Dify pings every 10 s while a streamed workflow runs; a longer silence means the connection
# is gone, and the run is then looked up instead.
STREAM_READ_TIMEOUT_S = 30.0
# A streamed request Dify refuses stays silent (one ping, then nothing for ~300 s); one that
# sends no `workflow_started` in this long is asked again in blocking mode, which tells why.
STREAM_START_WAIT_S = STREAM_READ_TIMEOUT_S
FILE_PROBE_MAX_REDIRECTS = 5
# The form used to tell a refused input from a slow start is read again after this long.
FORM_TTL_S = 300.0
FILE_PROBE_TIMEOUT_S = 10.0
# How often a lost run is looked up: quickly at first, then every 10 s.
LOOKUP_FIRST_WAIT_S = 1.0
LOOKUP_MAX_WAIT_S = 10.0
STOP_TIMEOUT_S = 5.0
_ERROR_BODY_BYTES = 64 * 1024
# An input form is a few KB; a bigger answer is not one (and is not read into memory whole).
MAX_FORM_BYTES = 1024 * 1024
# Events whose size counts against the cap: the ones whose content is kept.
_KEPT_EVENTS = frozenset({"workflow_finished", "error", "workflow_paused", "workflow_started"})
_EVENT_BOUNDARY = re.compile(rb"\r?\n\r?\n")
_EVENT_NAME = re.compile(r'\{\s*"event"\s*:\s*"([A-Za-z_]+)"')
_TASK_ID = re.compile(r'"task_id"\s*:\s*"([^"]{1,200})"')


@dataclass
class _Started:
    """What `workflow_started` told us: enough to look the run up or stop it."""

    run_id: str | None = None
    task_id: str | None = None


def _shut_down(stream: Any) -> None:
    """Shut a response's socket down from another thread: a blocked read wakes at once
    (closing the socket would not wake it)."""
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Alarms:
    """One daemon thread that fires every watchdog of the process when its time comes: a
    thread started per call (threading.Timer) cost more CPU than the rest of the call's own
    work. Cancelled alarms are dropped from the heap once they are half of it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._live: set[int] = set()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, seconds: float, fire: Callable[[], None]) -> int:
        entry = (time.monotonic() + max(0.0, seconds), next(self._seq), fire)
        with self._cond:
            heapq.heappush(self._heap, entry)
            self._live.add(entry[1])
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dify-alarms", daemon=True)
                self._thread.start()
            if self._heap[0] is entry:
                self._cond.notify()
        return entry[1]

    def cancel(self, alarm: int) -> None:
        with self._cond:
            self._live.discard(alarm)
            if len(self._heap) > 64 and len(self._live) < len(self._heap) // 2:
                self._heap = [e for e in self._heap if e[1] in self._live]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                _, alarm, fire = heapq.heappop(self._heap)
                self._live.discard(alarm)
                self._cond.release()
                try:
                    with contextlib.suppress(Exception):
                        fire()
                finally:
                    self._cond.acquire()


_ALARMS = _Alarms()


class _Watchdog:
    """Shuts the response's socket down when the deadline passes, which wakes a blocked read
    at once (closing the socket from another thread would not)."""

    def __init__(self, response: httpx.Response, seconds: float) -> None:
        self.fired = False
        self._socket = response.extensions.get("network_stream")
        self._seconds = seconds
        self._alarm: int | None = None

    def _fire(self) -> None:
        self.fired = True
        _shut_down(self._socket)

    def __enter__(self) -> _Watchdog:
        self._alarm = _ALARMS.add(self._seconds, self._fire)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._alarm is not None:
            _ALARMS.cancel(self._alarm)


class _StreamMonitor:
    """Watches a stream on the process's one alarm thread (a read timeout would close the
    connection, and a streamed request whose run has not started yet cannot be found again):
    - no `workflow_started` after STREAM_START_WAIT_S: asks `refused()` whether Dify refuses
      these inputs (then no run exists or ever will) and if so shuts the socket, so the
      reader can ask Dify in blocking mode for its reason; otherwise keeps waiting (Dify's
      worker may only be busy: asking again would run the row twice). That question does
      I/O (the form, each file's host), so it gets a thread of its own; it is rare;
    - after `workflow_started`, STREAM_READ_TIMEOUT_S without a byte: shuts the socket, and
      the run is looked up instead.
    No thread per call and no polling: an alarm fires when the next check is due and sets
    the one after it (a thread per stream was the worker's largest CPU cost per row)."""

    def __init__(
        self,
        response: httpx.Response,
        started: _Started,
        refused: Callable[[], str | None],
        clock: Callable[[], float],
    ) -> None:
        self._socket = response.extensions.get("network_stream")
        self._started, self._refused, self._clock = started, refused, clock
        self._opened = self._last = clock()
        self._lock = threading.Lock()
        self._done = False
        self._checked = False
        self._alarm: int | None = None
        self.refusal: str | None = None
        self.idle = False

    def touch(self) -> None:
        self._last = self._clock()

    def _arm(self, seconds: float) -> None:
        with self._lock:
            if not self._done:
                self._alarm = _ALARMS.add(max(0.05, seconds), self._check)

    def _check(self) -> None:
        """On the alarm thread: decide quickly, never block."""
        if self._done:
            return
        now = self._clock()
        if self._started.run_id is None:
            if not self._checked and now - self._opened >= STREAM_START_WAIT_S:
                self._checked = True
                threading.Thread(target=self._ask, daemon=True, name="stream-refusal").start()
            wait = STREAM_START_WAIT_S - (now - self._opened)
            # Until the run starts there is no idle limit; look again for `workflow_started`.
            self._arm(wait if wait > 0 else STREAM_READ_TIMEOUT_S)
            return
        idle_for = now - self._last
        if idle_for >= STREAM_READ_TIMEOUT_S:
            self.idle = True
            self._shut()
            return
        self._arm(STREAM_READ_TIMEOUT_S - idle_for)

    def _ask(self) -> None:
        refusal = self._refused()
        if refusal is not None and self._started.run_id is None:
            self.refusal = refusal
            self._shut()

    def _shut(self) -> None:
        if not self._done:
            _shut_down(self._socket)

    def __enter__(self) -> _StreamMonitor:
        self._arm(STREAM_START_WAIT_S)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
            if self._alarm is not None:
                _ALARMS.cancel(self._alarm)


class _EventText:
    """What EventSource reads (headers, iter_text), with a cap on what is kept: the final
    event (or an error) may not pass `limit` bytes, while progress events (text chunks, node
    events) may add up to any size and only a single one past `ceiling` is refused (it would
    still be held in memory whole). It also notes `workflow_started` as soon as its bytes
    arrive, so a run refused for its size can be stopped."""

    def __init__(
        self,
        response: httpx.Response,
        limit: int,
        started: _Started,
        on_too_large: Callable[[], None],
        on_bytes: Callable[[], None] = lambda: None,
    ) -> None:
        self.headers = response.headers
        self._on_bytes = on_bytes
        self._response = response
        self._limit = limit
        self._ceiling = max(8 * limit, 16 * 1024 * 1024)
        self._started = started
        self._on_too_large = on_too_large

    def iter_text(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        event = b""  # the start of the event being received: enough to name it
        size = 0  # its bytes so far
        for chunk in self._response.iter_bytes():
            self._on_bytes()
            first, *rest = _EVENT_BOUNDARY.split(chunk)
            event, size = event + first[: 200 - len(event)], size + len(first)
            for part in rest:  # each boundary ends an event and starts the next
                self._check(event, size)
                self._note_start(event)
                event, size = part[:200], len(part)
            self._check(event, size)
            yield decoder.decode(chunk)
        yield decoder.decode(b"", final=True)

    def _check(self, event: bytes, size: int) -> None:
        if size <= self._limit:
            return
        named = _EVENT_NAME.search(event.decode("utf-8", "replace"))
        kept = named is None or named.group(1) in _KEPT_EVENTS
        if kept or size > self._ceiling:
            self._on_too_large()
            raise _too_large(self._limit)

    def _note_start(self, event: bytes) -> None:
        if self._started.task_id is None and b"workflow_started" in event:
            found = _TASK_ID.search(event.decode("utf-8", "replace"))
            self._started.task_id = found.group(1) if found else None


def _too_large(limit: int) -> PermanentError:
    return PermanentError(
        f"an answer from Dify passed {limit} bytes (DIFY_MAX_RESPONSE_BYTES) and was not read "
        "further; make the workflow return less, or raise the limit",
        code="response_too_large",
    )


class WorkflowClient:
    def __init__(
        self,
        *,
        http: httpx.Client,
        endpoint: str,
        api_key: ApiKey,
        response_mode: Literal["blocking", "streaming"],
        user: str,
        timeout_s: float,
        max_response_bytes: int,
        pool_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = http
        self._endpoint = endpoint
        self._api_key = api_key
        self._mode = response_mode
        self._user = user
        self._timeout_s = timeout_s
        self._max_bytes = max_response_bytes
        self._pool_timeout_s = pool_timeout_s
        self._clock = clock
        self._sleep = sleep
        self._base = api_base(endpoint)
        self._form_lock = threading.Lock()
        self._form_cache: tuple[float, list[Variable]] | None = None

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    def run(self, inputs: dict[str, Any], *, deadline: float | None = None) -> WorkflowRun:
        """Run the workflow once, by `deadline` (this client's clock; default now + timeout).

        Raises a TransientError (or one of its kinds) to retry, or PermanentError to give up;
        either carries the `workflow_run_id` when Dify started a run.
        """
        if deadline is None:
            deadline = self._clock() + self._timeout_s
        body = {"inputs": without_blanks(inputs), "response_mode": self._mode, "user": self._user}
        started = _Started()
        try:
            if self._mode == "streaming":
                return self._run_streaming(body, deadline, started)
            return self._run_blocking(body, deadline)
        except CapacityError as exc:
            if self._mode == "streaming" and concurrency_limit(exc.message) == 1:
                raise limit_of_one_streaming(exc) from None
            raise
        except BatchError as exc:
            if isinstance(exc, AppWideError) and exc.bad_key:
                self._api_key.forget()  # it may have been rotated: read it again next time
            exc.workflow_run_id = exc.workflow_run_id or started.run_id
            raise

    # -- plumbing -----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._api_key.get()}",
            "Content-Type": "application/json",
        }

    def _timeout(self, deadline: float, read_cap: float | None = None) -> httpx.Timeout:
        remaining = max(0.001, deadline - self._clock())
        read = min(remaining, read_cap) if read_cap else remaining
        # Waiting for a free pooled connection is local: it gets its own budget (the pool is
        # sized to the worker's concurrency, so this wait is short).
        return httpx.Timeout(
            read,
            connect=min(10.0, remaining),
            write=min(30.0, remaining),
            pool=self._pool_timeout_s,
        )

    def _timed_out(self, what: str) -> TransientError:
        return TransientError(
            f"{what} within DIFY_API_TIMEOUT_MINUTES ({self._timeout_s:g} s)", code="timeout"
        )

    def _error_from(self, response: httpx.Response) -> BatchError:
        raw = bytearray()
        for chunk in response.iter_bytes():
            raw.extend(chunk[: _ERROR_BODY_BYTES - len(raw)])
            if len(raw) >= _ERROR_BODY_BYTES:
                break
        return classify_http_error(
            response.status_code,
            raw.decode("utf-8", errors="replace"),
            response.headers.get("retry-after"),
        )

    def _read_json(self, response: httpx.Response) -> Any:
        """A whole JSON answer, refused past the size cap."""
        raw = bytearray()
        for chunk in response.iter_bytes():
            raw.extend(chunk)
            if len(raw) > self._max_bytes:
                raise _too_large(self._max_bytes)
        try:
            return json.loads(raw)
        except RecursionError:
            raise _too_deep() from None
        except ValueError:
            kind = response.headers.get("content-type") or "no content type"
            raise TransientError(
                f"Dify's answer ({kind}, {len(raw)} bytes) is not JSON; it was malformed or "
                "cut off",
                code="malformed",
            ) from None

    # -- blocking -----------------------------------------------------------------------------

    def _run_blocking(self, body: dict[str, Any], deadline: float) -> WorkflowRun:
        try:
            with (
                self._http.stream(
                    "POST",
                    self._endpoint,
                    json=body,
                    headers=self._headers(),
                    timeout=self._timeout(deadline),
                ) as response,
                _Watchdog(response, deadline - self._clock()) as watchdog,
            ):
                try:
                    if response.status_code != 200:
                        raise self._error_from(response)
                    return parse_run(self._read_json(response))
                except (httpx.HTTPError, TransientError):
                    if watchdog.fired:
                        raise self._timed_out("Dify's answer did not finish") from None
                    raise
        except httpx.PoolTimeout:
            raise _pool_busy() from None
        except httpx.TimeoutException:
            raise self._timed_out("no answer from Dify") from None
        except httpx.HTTPError as exc:
            raise _connection_error(exc) from None

    # -- streaming ----------------------------------------------------------------------------

    def _run_streaming(
        self, body: dict[str, Any], deadline: float, started: _Started
    ) -> WorkflowRun:
        headers = {**self._headers(), "Accept": "text/event-stream"}
        try:
            with (
                self._http.stream(
                    "POST",
                    self._endpoint,
                    json=body,
                    headers=headers,
                    timeout=self._timeout(deadline),
                ) as response,
                _Watchdog(response, deadline - self._clock()) as watchdog,
                _StreamMonitor(
                    response, started, lambda: self._dify_refuses(body["inputs"]), self._clock
                ) as monitor,
            ):
                try:
                    if response.status_code != 200:
                        raise self._error_from(response)
                    return self._read_stream(response, started, monitor)
                except (httpx.HTTPError, TransientError, _StreamLost):
                    if watchdog.fired:
                        self._stop(started)
                        raise self._timed_out("the workflow did not finish") from None
                    if monitor.refusal is not None:
                        raise _Refused(monitor.refusal) from None
                    if monitor.idle:
                        raise _StreamLost(
                            f"the stream sent nothing for {STREAM_READ_TIMEOUT_S:g} s"
                        ) from None
                    raise
        except _Refused as refused:
            return self._never_started(body, deadline, refused.reason)
        except httpx.PoolTimeout:
            raise _pool_busy() from None
        except httpx.TimeoutException:
            self._stop(started)
            raise self._timed_out("no answer from Dify") from None
        except _StreamLost as lost:
            return self._look_up(started, deadline, lost.reason)
        except httpx.HTTPError as exc:
            if started.run_id is not None:
                return self._look_up(started, deadline, f"the stream broke ({type(exc).__name__})")
            raise _connection_error(exc) from None

    def _read_stream(
        self, response: httpx.Response, started: _Started, monitor: _StreamMonitor
    ) -> WorkflowRun:
        if "text/event-stream" not in response.headers.get("content-type", ""):
            # Some proxies and Dify versions answer a streaming call with one JSON document.
            return parse_run(self._read_json(response))
        text = _EventText(
            response, self._max_bytes, started, lambda: self._stop(started), monitor.touch
        )
        for sse in EventSource(cast(httpx.Response, text)).iter_sse():
            if sse.event == "ping" or not sse.data.strip():
                continue
            named = _EVENT_NAME.match(sse.data.lstrip())
            if named and named.group(1) not in _KEPT_EVENTS:
                continue  # progress: not even parsed (text chunks can be many thousands)
            event = _event(sse.data)
            kind = event.get("event") if isinstance(event, dict) else None
            if kind not in _KEPT_EVENTS:
                continue  # node_*, text_chunk, tts_*, iteration_*, unknown future events
            assert isinstance(event, dict)
            if kind == "workflow_started":
                started.run_id = _short(event.get("workflow_run_id")) or started.run_id
                started.task_id = _short(event.get("task_id")) or started.task_id
            elif kind == "workflow_finished":
                return parse_run(event)
            elif kind == "workflow_paused":
                raise paused_for_human_input()
            elif kind == "error":
                raise classify_stream_error(event)
        if started.run_id is None:
            raise TransientError(
                "Dify's stream ended before its workflow started (cut off)", code="cut_off"
            )
        raise _StreamLost("the stream ended before workflow_finished")

    def _never_started(self, body: dict[str, Any], deadline: float, why: str) -> WorkflowRun:
        """Dify refuses these inputs, and said so on the stream only by silence.

        Dify 1.x answers a streamed request at once (200, one ping) and hands the run to its
        Celery worker, which checks the inputs first (`_prepare_user_inputs`) and creates the
        run only if they pass: a refused input is told only in Dify's log, and no run exists.
        The same request in blocking mode is checked the same way, synchronously, and answered
        400 with the reason before any run exists: that is asked here, so the row ends with
        Dify's own words at its first attempt. It is asked only when Dify's own rules (the
        form, the files' hosts) say the inputs are refused: a stream that is only slow to
        start (Dify's worker busy) is waited for, never asked again, so no row runs twice."""
        log.warning(
            "Dify's stream sent no workflow_started within %g s and Dify refuses the inputs "
            "(%s): asking in blocking mode for its reason",
            STREAM_START_WAIT_S,
            why,
            extra={"event": "stream_refused"},
        )
        return self._run_blocking({**body, "response_mode": "blocking"}, deadline)

    def _dify_refuses(self, inputs: dict[str, Any]) -> str | None:
        """Why Dify refuses these inputs, by its own rules, or None when it takes them (or when
        that cannot be told: the stream is then waited for)."""
        form = self._form()
        if form is None:
            return None
        reason = refusal(form, inputs)
        if reason is not None:
            return reason
        for file in remote_files(form, inputs):
            reason = self._file_refusal(file)
            if reason is not None:
                return reason
        return None

    def _form(self) -> list[Variable] | None:
        """The app's input form, read once per FORM_TTL_S (a new published version may change
        it); None when it cannot be read."""
        now = self._clock()
        with self._form_lock:
            if self._form_cache is not None and now - self._form_cache[0] < FORM_TTL_S:
                return self._form_cache[1]
        try:
            form = FormClient(
                http=self._http, endpoint=self._endpoint, api_key=self._api_key
            ).form()
        except BatchError as exc:
            log.warning("could not read the input form: %s", exc.describe())
            return None
        with self._form_lock:
            self._form_cache = (now, form)
        return form

    def _file_refusal(self, file: dict[str, Any]) -> str | None:
        """What Dify's file factory meets first for a remote file: a HEAD to its host (retried
        by Dify; down = "Reached maximum retries"), then the type it detects from the name and
        content type, which must equal the `type` sent (the service API checks strictly)."""
        url = str(file.get("url") or "")
        if not _probe_allowed(url):
            return None
        name = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
        content_type = ""
        target = url
        for _ in range(FILE_PROBE_MAX_REDIRECTS + 1):  # each hop checked, like the first
            try:
                head = self._http.head(target, timeout=FILE_PROBE_TIMEOUT_S)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                return f"Reached maximum retries for URL {url} (its host does not answer)"
            except httpx.HTTPError:
                # Not a host that is down (our own pool, a slow answer): no verdict, so the
                # stream is waited for rather than asked again (that could run the row twice).
                return None
            location = head.headers.get("location") if head.is_redirect else None
            if not location:
                break
            target = str(head.url.join(location))
            if not _probe_allowed(target):
                return None
        if head.status_code == 200:
            disposition = head.headers.get("content-disposition") or ""
            found = re.search(r'filename="?([^";]+)"?', disposition)
            name = unquote(found.group(1)).rsplit("/", 1)[-1] if found else name
            content_type = head.headers.get("content-type") or ""
        detected = detected_type(name, content_type)
        if detected != file.get("type"):
            return "Detected file type does not match the specified type. Please verify the file."
        return None

    # -- a lost stream: look the run up, do not start it again ---------------------------------

    def _look_up(self, started: _Started, deadline: float, reason: str) -> WorkflowRun:
        run_id = started.run_id
        log.warning("Dify run %s: %s; looking it up", run_id, reason, extra={"event": "lookup"})
        wait = LOOKUP_FIRST_WAIT_S
        while True:
            payload = self._get_run(str(run_id), deadline)
            status = payload.get("status") if isinstance(payload, dict) else None
            if payload is not None and status not in STILL_RUNNING:
                return parse_run({"workflow_run_id": run_id, "data": payload})
            remaining = deadline - self._clock()
            if remaining <= 0:
                self._stop(started)
                raise TransientError(
                    f"{reason}, and run {run_id} did not finish within DIFY_API_TIMEOUT_MINUTES "
                    f"({self._timeout_s:g} s); it was stopped",
                    code="timeout",
                )
            self._sleep(min(wait, remaining))
            wait = min(wait * 1.5, LOOKUP_MAX_WAIT_S)

    def _get_run(self, run_id: str, deadline: float) -> Any:
        """The run's detail, or None when it could not be read this time."""
        try:
            with self._http.stream(
                "GET",
                f"{self._base}/workflows/run/{run_id}",
                headers=self._headers(),
                timeout=self._timeout(deadline, LOOKUP_MAX_WAIT_S),
            ) as response:
                if response.status_code == 404:
                    raise TransientError(
                        f"the stream broke and Dify does not know run {run_id}; retrying the row",
                        code="cut_off",
                    )
                if response.status_code != 200:
                    error = self._error_from(response)
                    if isinstance(error, AppWideError):
                        raise error
                    return None
                return self._read_json(response)
        except TransientError as exc:
            if exc.code == "malformed":
                return None
            raise
        except httpx.HTTPError:
            return None

    def _stop(self, started: _Started) -> None:
        """Ask Dify to stop a streamed run we gave up on, so it stops spending tokens and frees
        its slot. The stop API needs the same `user` that started the run."""
        if not started.task_id:
            return
        url = f"{self._base}/workflows/tasks/{started.task_id}/stop"
        try:
            self._http.post(
                url, json={"user": self._user}, headers=self._headers(), timeout=STOP_TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            log.warning("could not stop the Dify task %s: %s", started.task_id, type(exc).__name__)


def api_base(endpoint: str) -> str:
    """The API's base URL (…/v1) from a workflow-run endpoint: the run lookup, the stop call
    and the input form hang off it."""
    marker = endpoint.rfind("/workflows/")
    return endpoint[:marker] if marker >= 0 else endpoint.rsplit("/", 1)[0]


class FormClient:
    """Reads the workflow's input form (`GET /v1/parameters`) with the app's key.

    The answer is read up to MAX_FORM_BYTES and typed strictly (parse_form): a hostile or
    broken answer (huge, nested past reason, `options: 5`, `required: "false"`) is refused
    with a ConfigError naming the problem, never walked or misread."""

    def __init__(
        self,
        *,
        http: httpx.Client,
        endpoint: str,
        api_key: ApiKey,
        max_bytes: int = MAX_FORM_BYTES,
    ) -> None:
        self._http = http
        self._url = f"{api_base(endpoint)}/parameters"
        self._api_key = api_key
        self._max_bytes = max_bytes

    def form(self) -> list[Variable]:
        """Raises ConfigError when the form cannot be read for good (the message says to set
        CHECK_INPUTS=false to run without the check), TransientError to try again later."""
        headers = {"Authorization": f"Bearer {self._api_key.get()}"}
        try:
            with self._http.stream("GET", self._url, headers=headers, timeout=30.0) as response:
                if response.status_code == 200:
                    return self._parse(self._read(response))
                raw = bytearray()
                for chunk in response.iter_bytes():
                    raw.extend(chunk[: _ERROR_BODY_BYTES - len(raw)])
                    if len(raw) >= _ERROR_BODY_BYTES:
                        break
                status, retry_after = response.status_code, response.headers.get("retry-after")
        except httpx.HTTPError as exc:
            raise _connection_error(exc) from None
        error = classify_http_error(status, raw.decode("utf-8", "replace"), retry_after)
        if isinstance(error, AppWideError) and error.bad_key:
            self._api_key.forget()
        if isinstance(error, TransientError) and not isinstance(error, AppWideError):
            raise error
        raise self._unusable(error.describe())

    def _read(self, response: httpx.Response) -> bytes:
        raw = bytearray()
        for chunk in response.iter_bytes():
            raw.extend(chunk)
            if len(raw) > self._max_bytes:
                raise self._unusable(
                    f"the answer passed {self._max_bytes} bytes and was not read further "
                    "(an input form is a few KB)"
                )
        return bytes(raw)

    def _parse(self, raw: bytes) -> list[Variable]:
        try:
            payload = json.loads(raw)
        except RecursionError:
            raise self._unusable("the answer is JSON nested too deeply to read") from None
        except ValueError:
            raise TransientError(
                "Dify's input form (GET /v1/parameters) is not JSON", code="malformed"
            ) from None
        try:
            return parse_form(payload)
        except FormError as exc:
            raise self._unusable(f"the answer is not an input form: {exc.message}") from None

    def _unusable(self, problem: str) -> ConfigError:
        return ConfigError(
            f"cannot read the workflow's input form (GET {self._url}): {problem}. Fix the Dify "
            "settings of the loader (endpoint, key), or set CHECK_INPUTS=false to run the rows "
            "without checking them first"
        )


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _probe_allowed(url: str) -> bool:
    """The worker asks a file's host for its headers only over http(s), and never the cloud's
    metadata server or other link-local addresses (whatever a sheet cell says)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host or host.startswith("metadata"):
        return False
    try:
        return not ipaddress.ip_address(host).is_link_local
    except ValueError:
        return True


class _StreamLost(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _event(data: str) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        raise _too_deep() from None
    except ValueError:
        raise TransientError("an event in Dify's stream is not JSON", code="malformed") from None


def _too_deep() -> PermanentError:
    # The same answer comes back on every retry: not worth running the workflow again.
    return PermanentError(
        "Dify's answer is JSON nested too deeply to read; make the workflow return flatter outputs",
        code="malformed",
    )


def _short(value: Any) -> str | None:
    return str(value)[:200] if value else None


def _pool_busy() -> CapacityError:
    # Waiting for one of this instance's own connections is not the row's fault: uncharged.
    return CapacityError(
        "every HTTP connection of this worker instance to Dify was busy", code="connections_busy"
    )


def _connection_error(exc: httpx.HTTPError) -> TransientError:
    # Connection refused or reset, a protocol error: worth a retry. Only the type is named: an
    # httpx message can quote the request, headers included.
    return TransientError(
        f"connection to Dify failed: {type(exc).__name__}", code="connection_error"
    )
