"""The HTTP edge shared by both functions: parse a request, turn an outcome into an answer."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import flask

from shared import logs
from shared.errors import BatchError, ConfigError, SheetError, TransientError
from shared.logs import get_logger
from shared.planning import LoadOptions
from shared.worker_service import TaskResult, WorkerOutcome

if TYPE_CHECKING:  # the loader's stack is not imported by the worker
    from shared.loader_service import LoadReport

log = get_logger("http")
MAX_ROW_ID_BYTES = 1500  # a Datastore key name's limit

Answer = tuple[dict[str, Any], int, dict[str, str]]


def json_answer(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Answer:
    return body, status, headers or {}


def parse_task(request: flask.Request) -> str | Answer:
    """The task body `{"id": "<row id>"}` -> the row id, or a 400 answer saying what is wrong."""
    raw = request.get_data(cache=False, as_text=False)
    try:
        body = json.loads(raw)
    except ValueError:
        return json_answer(
            {
                "error": 'the body is not JSON; send {"id": "<row id>"} with Content-Type '
                "application/json"
            },
            400,
        )
    row_id = body.get("id") if isinstance(body, dict) else None
    if isinstance(row_id, int) and not isinstance(row_id, bool):
        row_id = str(row_id)
    if not isinstance(row_id, str) or not row_id.strip():
        return json_answer(
            {"error": 'the body needs a non-empty string "id": {"id": "<row id>"}'}, 400
        )
    if len(row_id.encode()) > MAX_ROW_ID_BYTES:
        return json_answer({"error": f'"id" is longer than {MAX_ROW_ID_BYTES} bytes'}, 400)
    return row_id


def worker_answer(outcome: WorkerOutcome) -> Answer:
    """Map an outcome to what Cloud Tasks should do: 2xx deletes the task; 500 retries this
    task alone; 429/503 also slow the whole queue down (Dify is full, or the queue paused)."""
    body = {
        "id": outcome.row_id,
        "outcome": outcome.result.value,
        "attempt": outcome.attempt,
        "detail": outcome.detail,
    }
    if outcome.result is TaskResult.RETRY:
        return json_answer(body, 500)
    if outcome.result is TaskResult.PAUSED:
        return json_answer(body, 503)
    if outcome.result is not TaskResult.DIFY_BUSY:
        return json_answer(body, 200)
    if outcome.retry_after is not None:
        return json_answer(body, 429, {"Retry-After": str(max(1, math.ceil(outcome.retry_after)))})
    return json_answer(body, 503)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
OPTION_NAMES = ("dry_run", "retry_failed", "reprocess_changed", "resume")


def parse_load_options(request: flask.Request) -> LoadOptions | Answer:
    """Options from the query string or a JSON body (Cloud Scheduler sends one)."""
    given: dict[str, Any] = dict(request.args.items())
    raw = request.get_data(cache=True, as_text=True)
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError:
            return json_answer(
                {"error": 'the body is not JSON; send options like {"dry_run": true}, or none'}, 400
            )
        if not isinstance(body, dict):
            return json_answer({"error": "the body must be a JSON object of options"}, 400)
        given.update(body)
    unknown = sorted(set(given) - set(OPTION_NAMES))
    if unknown:
        return json_answer(
            {"error": f"unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}"},
            400,
        )
    values: dict[str, bool] = {}
    for name, value in given.items():
        text = str(value).strip().lower()
        if isinstance(value, bool):
            values[name] = value
        elif text in _TRUE | _FALSE:
            values[name] = text in _TRUE
        else:
            return json_answer(
                {"error": f"option {name} must be true or false, got {value!r}"}, 400
            )
    return LoadOptions(**values)


def loader_answer(report: LoadReport) -> Answer:
    """200 with the summary; 503 when some tasks could not be created, so Cloud Scheduler's
    retry (or the next run) creates them."""
    return json_answer(report.to_dict(), 503 if report.errors else 200)


def failure_answer(exc: Exception) -> Answer:
    """Settings or sheet errors, unavailable services, bugs: an answer that says why, and one
    JSON log line (also when the failure came before the settings configured logging)."""
    logs.configure()
    if isinstance(exc, ConfigError):
        log.error("%s", exc.message, extra={"event": "config_error"})
        return json_answer({"error": exc.message}, 500)
    if isinstance(exc, SheetError):
        log.error("%s", exc.message, extra={"event": "sheet_error"})
        return json_answer({"error": exc.message}, 422)
    if isinstance(exc, TransientError):
        log.warning("%s", exc.describe(), extra={"event": "transient_error"})
        return json_answer({"error": exc.describe()}, 503)
    if isinstance(exc, BatchError):
        log.error("%s", exc.describe(), extra={"event": "permanent_error"})
        return json_answer({"error": exc.describe()}, 500)
    log.exception("unexpected error", extra={"event": "internal_error"})
    return json_answer({"error": f"internal error: {type(exc).__name__}"}, 500)
