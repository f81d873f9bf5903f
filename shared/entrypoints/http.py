"""The HTTP edge shared by both functions: parse a request, turn an outcome into an answer."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import flask

from shared.adapters import logs
from shared.adapters.logs import get_logger
from shared.core.errors import BatchError, ConfigError, SheetError, TransientError
from shared.core.outcomes import clip
from shared.core.planning import LoadOptions
from shared.core.redact import scrub
from shared.core.text import has_lone_surrogate, storable
from shared.services.worker_service import TaskResult, WorkerOutcome

if TYPE_CHECKING:  # the loader's stack is not imported by the worker
    from shared.services.loader_service import LoadReport

log = get_logger("http")
MAX_ROW_ID_BYTES = 1500  # a Datastore key name's limit

Answer = tuple[dict[str, Any], int, dict[str, str]]


def json_answer(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Answer:
    return body, status, headers or {}


def _json_body(raw: bytes) -> tuple[Any, str | None]:
    """The parsed body, or why it cannot be used (never a traceback)."""
    try:
        return json.loads(raw), None
    except RecursionError:
        return None, "the body is JSON nested too deeply"
    except ValueError:
        return None, "the body is not JSON"


def parse_task(request: flask.Request) -> str | Answer:
    """The task body `{"id": "<row id>"}` -> the row id, or a 400 answer saying what is wrong."""
    raw = request.get_data(cache=False, as_text=False)
    body, problem = _json_body(raw)
    if problem:
        return json_answer(
            {"error": f'{problem}; send {{"id": "<row id>"}} with Content-Type application/json'},
            400,
        )
    row_id = body.get("id") if isinstance(body, dict) else None
    if isinstance(row_id, int) and not isinstance(row_id, bool):
        row_id = str(row_id)
    if not isinstance(row_id, str) or not row_id.strip():
        return json_answer(
            {"error": 'the body needs a non-empty string "id": {"id": "<row id>"}'}, 400
        )
    if has_lone_surrogate(row_id):
        return json_answer({"error": '"id" is not valid Unicode text (a lone surrogate)'}, 400)
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
    if outcome.result in (TaskResult.RETRY, TaskResult.BUSY, TaskResult.NOT_RECORDED):
        # Kept and retried with the queue's backoff, without slowing the other tasks (Cloud
        # Tasks honours Retry-After only on 429/503, which slow the whole queue).
        return json_answer(body, 500)
    if outcome.result is TaskResult.PAUSED:
        return json_answer(body, 503)
    if outcome.result is not TaskResult.DIFY_BUSY:
        return json_answer(body, 200)
    if outcome.retry_after is not None:
        return json_answer(body, 429, {"Retry-After": str(max(1, math.ceil(outcome.retry_after)))})
    return json_answer(body, 503)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
OPTION_NAMES = (
    "dry_run",
    "retry_failed",
    "reprocess_changed",
    "resume",
    "write_back_only",
    "pause",
)
MAX_RETRY_IDS = 10_000


def _flag(name: str, value: Any, *, in_query: bool) -> bool | str:
    """An option's value, or the error. A flag given without a value (`?dry_run`) is true."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if in_query and text == "":
        return True
    if text in _TRUE | _FALSE:
        return text in _TRUE
    return f"option {name} must be true or false, got {clip(repr(value))}"


def parse_load_options(request: flask.Request) -> LoadOptions | Answer:
    """Options from the query string or a JSON body (Cloud Scheduler sends one); both may be
    given, but never with different values for one option."""
    raw = request.get_data(cache=True, as_text=False)
    body: Any = {}
    if raw.strip():
        body, problem = _json_body(raw)
        if problem:
            return json_answer(
                {"error": f'{problem}; send options like {{"dry_run": true}}, or none'}, 400
            )
        if not isinstance(body, dict):
            return json_answer({"error": "the body must be a JSON object of options"}, 400)
    retry_ids = _retry_ids(body.pop("retry_ids", None))
    if isinstance(retry_ids, str):
        return json_answer({"error": retry_ids}, 400)
    sources = [(dict(request.args.items()), True), (body, False)]
    unknown = sorted({str(k) for given, _ in sources for k in given} - set(OPTION_NAMES))
    if unknown:
        return json_answer(
            {
                "error": f"unknown option(s) {clip(', '.join(unknown))}; known: "
                f"{', '.join(OPTION_NAMES)}"
            },
            400,
        )
    values: dict[str, bool] = {}
    for given, in_query in sources:
        for name, value in given.items():
            flag = _flag(name, value, in_query=in_query)
            if isinstance(flag, str):
                return json_answer({"error": flag}, 400)
            if name in values and values[name] != flag:
                return json_answer(
                    {
                        "error": f"option {name} is {values[name]} in the query string but "
                        f"{flag} in the body; give it once"
                    },
                    400,
                )
            values[name] = flag
    return LoadOptions(**values, retry_ids=retry_ids)


def _retry_ids(value: Any) -> frozenset[str] | str:
    """The body's `retry_ids` (FAILED rows to run again), or what is wrong with it."""
    if value is None:
        return frozenset()
    if (
        not isinstance(value, list)
        or len(value) > MAX_RETRY_IDS
        or not all(isinstance(i, str) and i.strip() for i in value)
    ):
        return (
            f"retry_ids must be a JSON list of at most {MAX_RETRY_IDS:,} row ids (non-empty "
            'strings), like {"retry_ids": ["r001", "r002"]}'
        )
    return frozenset(value)


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
        return json_answer({"error": storable(scrub(exc.message))}, 500)
    if isinstance(exc, SheetError):
        log.error("%s", exc.message, extra={"event": "sheet_error"})
        return json_answer({"error": storable(scrub(exc.message))}, 422)
    if isinstance(exc, TransientError):
        log.warning("%s", exc.describe(), extra={"event": "transient_error"})
        return json_answer({"error": storable(scrub(exc.describe()))}, 503)
    if isinstance(exc, BatchError):
        log.error("%s", exc.describe(), extra={"event": "permanent_error"})
        return json_answer({"error": storable(scrub(exc.describe()))}, 500)
    log.exception("unexpected error", extra={"event": "internal_error"})
    return json_answer({"error": f"internal error: {type(exc).__name__}"}, 500)
