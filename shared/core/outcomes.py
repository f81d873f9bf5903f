"""Pure classification of Dify's answers onto the error hierarchy (the worker's brain).

This is the one place that decides what each Dify answer means for the row and the batch.
It follows how Dify's server (langgenius/dify 1.x) really answers, which differs from its
documentation in ways that matter to a batch (see the README's outcome table):
- its per-app concurrency limit comes back as 400 `invalid_param` "Too many requests..." on
  released 1.x servers and as 429 `too_many_requests` on newer ones: capacity, not input;
- 429 `rate_limit_error` is a quota (daily or plan limit), not a throttle: app-wide;
- a model provider's rate limit, connection error or outage inside a run is formatted
  `[<provider>] Rate Limit Error, ...` and is transient, although it arrives as a 400 or a
  `failed` run.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from shared.core.errors import (
    AppWideError,
    BatchError,
    CapacityError,
    PermanentError,
    TransientError,
)
from shared.core.model import WorkflowRun

SUCCEEDED = frozenset({"succeeded", "partial-succeeded"})
STILL_RUNNING = frozenset({"running", "pending", "scheduled"})
_MAX_MESSAGE_CHARS = 1000
# A Retry-After past this is treated as this: Cloud Tasks' own maximum backoff is of that order,
# and a huge value must not park a row for days.
MAX_RETRY_AFTER_S = 3600.0

# Proxies in front of Dify (nginx, Cloudflare) answer these when Dify is overloaded or slow;
# no run was started that we could wait for.
_CAPACITY_STATUSES = frozenset({502, 503, 504, 520, 521, 522, 523, 524})
_CONCURRENCY_LIMIT = re.compile(r"too many requests|maximum concurrent requests", re.IGNORECASE)
_LIMIT_VALUE = re.compile(r"maximum concurrent requests allowed for \S+ is (\d+)", re.IGNORECASE)
_UPSTREAM_TRANSIENT = re.compile(
    r"\[[^\]]*\]\s*(Rate Limit Error|Connection Error|Server Unavailable Error)", re.IGNORECASE
)
_UPSTREAM_CREDENTIALS = re.compile(r"\[[^\]]*\]\s*Incorrect model credentials", re.IGNORECASE)
# A provider's used-up quota arrives as a rate-limit error (OpenAI: 429 `insufficient_quota`):
# waiting a little does not help, every row meets it.
_UPSTREAM_QUOTA = re.compile(
    r"\[[^\]]*\]\s*Rate Limit Error.*(insufficient_quota|exceeded your current quota)",
    re.IGNORECASE | re.DOTALL,
)

_FILE_HOST_DOWN = re.compile(r"Reached maximum retries \(\d+\) for URL", re.IGNORECASE)

_RESUME = "then resume the queue"
# Codes that fail every row of the app the same way, with what the operator must do.
_APP_WIDE_CODES = {
    "app_unavailable": "the Dify app is not available (not published, or misconfigured): "
    f"publish the workflow in Dify, {_RESUME}",
    "not_workflow_app": "the key belongs to a Dify app that is not a workflow app: use the key "
    f"of the workflow app, {_RESUME}",
    "provider_not_initialize": "the app's model provider has no credentials in Dify: set them "
    f"up under Settings > Model Provider, {_RESUME}",
    "provider_quota_exceeded": "the model provider's quota in Dify is used up: add quota or "
    f"switch the model, {_RESUME}",
    "model_currently_not_support": "the app's model is not available in Dify: choose another "
    f"model in the workflow and publish it, {_RESUME}",
    "rate_limit_error": "Dify's quota is used up (workflow execution quota or the plan's "
    f"requests per day): wait for it to reset or raise the plan, {_RESUME}",
}
_APP_WIDE_STATUSES = {
    401: (
        "unauthorized",
        "Dify refuses the API key (wrong, revoked or rotated): put the app's current key in "
        f"DIFY_API_KEY or the secret DIFY_API_KEY_SECRET_ID names, {_RESUME}",
    ),
    403: (
        "forbidden",
        "Dify forbids this app's API (the app or its API access is disabled, or the workspace "
        f"archived): enable it in Dify, {_RESUME}",
    ),
    404: (
        "not_found",
        "Dify knows no app or workflow at DIFY_API_ENDPOINT (or the pinned workflow id): fix "
        f"the endpoint, {_RESUME}",
    ),
}


def clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + "…"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped at
    MAX_RETRY_AFTER_S; None if absent or not understood."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value[:12]), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(MAX_RETRY_AFTER_S, max(0.0, (when - (now or datetime.now(UTC))).total_seconds()))


def _body_code_message(status: int, body: str) -> tuple[str, str]:
    code, message = f"http_{status}", clip(body) or f"HTTP {status} with an empty body"
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        code = clip(str(parsed.get("code") or code))
        message = clip(str(parsed.get("message") or message))
    return code, message


def _model_error(message: str) -> BatchError | None:
    """A model provider's failure named inside Dify's message, if any. Known only from text
    (which can quote the row's cells), an app-wide one is marked `from_text`."""
    if _UPSTREAM_QUOTA.search(message):
        return AppWideError(
            message,
            code="provider_quota",
            remedy="the model provider's quota or credit is used up: add credit or raise the "
            f"plan at the provider (or switch the model in Dify), {_RESUME}",
            from_text=True,
        )
    if _UPSTREAM_TRANSIENT.search(message):
        return TransientError(message, code="upstream_model_error")
    if _UPSTREAM_CREDENTIALS.search(message):
        return AppWideError(
            message,
            code="provider_credentials",
            remedy="the model provider refuses the credentials set in Dify: fix them under "
            f"Settings > Model Provider, {_RESUME}",
            from_text=True,
        )
    return None


def concurrency_limit(message: str) -> int | None:
    """The app's concurrency limit (max_active_requests) named in Dify's "Too many requests"
    answer, if it names one."""
    found = _LIMIT_VALUE.search(message)
    return int(found.group(1)[:9]) if found else None


def limit_of_one_streaming(error: CapacityError) -> AppWideError:
    """Dify 1.x counts a streamed request twice against the app's limit: with a limit of 1
    it refuses every one, even alone. Retrying can never help: stop the batch and say why."""
    return AppWideError(
        error.message.split(" (the app's concurrency limit", 1)[0],
        code="concurrency_limit",
        remedy="the Dify app's concurrency limit (max_active_requests) is 1, and Dify refuses "
        "every streamed request under a limit of 1: raise the app's limit to 2 or more (or 0, "
        "no limit) in Dify, or set DIFY_RESPONSE_MODE=blocking, then resume the queue",
    )


def classify_http_error(status: int, body: str, retry_after: str | None = None) -> BatchError:
    """Map a non-200 Dify answer (or a stream's `error` event) onto the error hierarchy."""
    code, message = _body_code_message(status, body)
    dify_json = code != f"http_{status}"
    text = f"Dify answered HTTP {status}: {message}"
    wait = parse_retry_after(retry_after)
    if status in (400, 429) and _CONCURRENCY_LIMIT.search(message):
        limit = concurrency_limit(message)
        hint = (
            f" (the app's concurrency limit, max_active_requests, is {limit}: keep the queue's "
            f"max concurrent dispatches at {limit} or less, or raise the limit in Dify)"
            if limit
            else ""
        )
        return CapacityError(text + hint, code="too_many_requests", retry_after=wait)
    if status == 400 and _FILE_HOST_DOWN.search(message):
        # Dify could not fetch a file the row names: the host's fault, not the row's.
        return TransientError(text, code="file_unreachable", retry_after=wait)
    if code in _APP_WIDE_CODES:
        return AppWideError(text, code=code, remedy=_APP_WIDE_CODES[code])
    if status == 403 and not dify_json:
        # Not Dify's own answer: a proxy or firewall in front of it refusing this request
        # (often for its content). Other rows may pass: this row's failure alone.
        return PermanentError(
            f"{text} (not Dify's own answer: a proxy or firewall in front of Dify refused "
            "this row's request, maybe for its content)",
            code="forbidden_by_proxy",
        )
    if status in _APP_WIDE_STATUSES:
        default_code, remedy = _APP_WIDE_STATUSES[status]
        code = default_code if code == f"http_{status}" else code
        return AppWideError(text, code=code, remedy=remedy, bad_key=status == 401)
    if status == 429:  # a throttle other than the quota (a proxy's, say)
        return CapacityError(text, code=code, retry_after=wait)
    model = _model_error(message)
    if model is not None:
        model.message = text
        return model
    if status in _CAPACITY_STATUSES:
        return CapacityError(text, code=code, retry_after=wait)
    if status >= 500 or status == 408:
        return TransientError(text, code=code, retry_after=wait)
    if status == 400:
        return PermanentError(text, code=code)
    return PermanentError(f"Dify answered unexpected HTTP {status}: {message}", code=code)


def _number(value: Any) -> float | None:
    """A finite number, or None: NaN and infinities cannot be stored or compared."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value) if not isinstance(value, int) or abs(value) < 2**63 else math.inf
    return number if math.isfinite(number) else None


def _outputs(value: Any) -> Any:
    # Some Dify versions hand the run detail's outputs back as a JSON string.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return {} if value is None else value


def parse_run(payload: Any) -> WorkflowRun:
    """Turn a blocking answer, a `workflow_finished` event or a run lookup into a succeeded
    WorkflowRun, or raise what the run's end means for the row."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise TransientError(
            "Dify's answer has no `data` object; it was malformed or cut off", code="malformed"
        )
    data: dict[str, Any] = payload["data"]
    raw_id = payload.get("workflow_run_id") or data.get("id") or data.get("workflow_run_id")
    run_id = clip(str(raw_id)) if raw_id else None
    status = data.get("status")
    tokens = _number(data.get("total_tokens"))
    error = clip(str(data["error"])) if data.get("error") else None
    if status in SUCCEEDED:
        outputs = _outputs(data.get("outputs"))
        if not isinstance(outputs, dict):
            raise PermanentError(
                "Dify's `outputs` is not an object; the workflow's end node must return "
                "named variables",
                code="malformed",
                workflow_run_id=run_id,
            )
        return WorkflowRun(
            workflow_run_id=run_id,
            status=str(status),
            outputs=outputs,
            elapsed_time=_number(data.get("elapsed_time")),
            total_tokens=int(tokens) if tokens is not None and abs(tokens) < 2**63 else None,
            error=error,
        )
    failure: BatchError
    if status == "failed":
        failure = _model_error(error or "") or PermanentError(
            f"workflow failed: {error or 'Dify gave no error message'}", code="workflow_failed"
        )
    elif status == "stopped":
        failure = PermanentError(
            f"workflow stopped: {error or 'stopped in Dify'}", code="workflow_stopped"
        )
    elif status == "paused":
        failure = paused_for_human_input()
    else:
        failure = TransientError(
            f"Dify's answer has an unexpected workflow status {clip(repr(status))}",
            code="malformed",
        )
    failure.workflow_run_id = run_id
    raise failure


def paused_for_human_input() -> PermanentError:
    return PermanentError(
        "the workflow paused at a human-input node and waits for a person, which a batch run "
        "cannot give: remove the node from the workflow, or finish this row in Dify",
        code="workflow_paused",
    )


def classify_stream_error(event: dict[str, Any]) -> BatchError:
    """An `error` event inside a 200 stream carries its own HTTP-like status."""
    status = event.get("status")
    body = json.dumps({"code": event.get("code"), "message": event.get("message")})
    error = classify_http_error(status if isinstance(status, int) else 500, body)
    run_id = event.get("workflow_run_id")
    error.workflow_run_id = clip(str(run_id)) if run_id else None
    return error
