"""Pure classification of Dify's answers onto the error hierarchy (the worker's brain).

This is the one place that decides which Dify answers are worth a retry.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from shared.errors import BatchError, PermanentError, TransientError
from shared.model import WorkflowRun

SUCCEEDED = frozenset({"succeeded", "partial-succeeded"})
# Every 400 is permanent: Dify documents invalid_param, app_unavailable, not_workflow_app,
# provider_not_initialize, provider_quota_exceeded, model_currently_not_support and
# completion_request_error, and each describes the inputs, the app or the key, so the same
# request fails again. 429 (too_many_requests, rate_limit_error) and 5xx are worth a retry.
_MAX_MESSAGE_CHARS = 1000


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + "…"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify_http_error(status: int, body: str, retry_after: str | None = None) -> BatchError:
    """Map a non-200 Dify answer onto TransientError or PermanentError."""
    code, message = f"http_{status}", _clip(body) or f"HTTP {status} with an empty body"
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        code = str(parsed.get("code") or code)
        message = _clip(str(parsed.get("message") or message))
    if status == 429 or status >= 500:
        return TransientError(
            f"Dify answered HTTP {status}: {message}",
            code=code,
            retry_after=parse_retry_after(retry_after),
        )
    if status in (400, 401, 403, 404):
        return PermanentError(f"Dify answered HTTP {status}: {message}", code=code)
    if status == 408:
        return TransientError(f"Dify answered HTTP 408: {message}", code=code)
    return PermanentError(f"Dify answered unexpected HTTP {status}: {message}", code=code)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def parse_run(payload: Any) -> WorkflowRun:
    """Turn a blocking answer or a `workflow_finished` event into a succeeded WorkflowRun.

    Raises PermanentError for runs that failed, were stopped or paused, and TransientError
    for answers that are malformed (cut off, wrong shape): those may succeed on a retry.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise TransientError(
            "Dify's answer has no `data` object; it was malformed or cut off", code="malformed"
        )
    data: dict[str, Any] = payload["data"]
    run_id = payload.get("workflow_run_id") or data.get("id")
    status = data.get("status")
    tokens = _number(data.get("total_tokens"))
    run = WorkflowRun(
        workflow_run_id=str(run_id) if run_id else None,
        status=str(status),
        outputs={},
        elapsed_time=_number(data.get("elapsed_time")),
        total_tokens=int(tokens) if tokens is not None else None,
        error=_clip(str(data["error"])) if data.get("error") else None,
    )
    if status in SUCCEEDED:
        outputs = data.get("outputs")
        if outputs is None:
            outputs = {}
        if not isinstance(outputs, dict):
            raise TransientError("Dify's `data.outputs` is not an object", code="malformed")
        return WorkflowRun(**{**run.__dict__, "outputs": outputs})
    if status in ("failed", "stopped"):
        raise PermanentError(
            f"workflow {status}: {run.error or 'Dify gave no error message'}",
            code=f"workflow_{status}",
        )
    if status == "paused":
        raise PermanentError(
            "workflow paused waiting for human input, which a batch run cannot give",
            code="workflow_paused",
        )
    raise TransientError(
        f"Dify's answer has an unexpected workflow status {status!r}", code="malformed"
    )


def classify_stream_error(event: dict[str, Any]) -> BatchError:
    """An `error` event inside a 200 stream carries its own HTTP-like status."""
    status = event.get("status")
    body = json.dumps({"code": event.get("code"), "message": event.get("message")})
    return classify_http_error(status if isinstance(status, int) else 500, body)
