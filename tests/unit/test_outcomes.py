"""Classifying Dify's answers: pure functions, no I/O."""

from datetime import UTC, datetime

import pytest

from shared.errors import PermanentError, TransientError
from shared.outcomes import classify_http_error, classify_stream_error, parse_retry_after, parse_run


def run(status, **data):
    return {"workflow_run_id": "r1", "data": {"status": status, **data}}


@pytest.mark.parametrize("status", ["succeeded", "partial-succeeded"])
def test_succeeded_runs_carry_outputs_and_usage(status):
    result = parse_run(run(status, outputs={"text": "hi"}, elapsed_time=1.5, total_tokens=7))
    assert (result.workflow_run_id, result.outputs, result.elapsed_time, result.total_tokens) == (
        "r1",
        {"text": "hi"},
        1.5,
        7,
    )


def test_null_outputs_are_an_empty_result():
    assert parse_run(run("succeeded", outputs=None)).outputs == {}


@pytest.mark.parametrize(
    ("status", "code"),
    [("failed", "workflow_failed"), ("stopped", "workflow_stopped"), ("paused", "workflow_paused")],
)
def test_unfinished_or_failed_runs_are_permanent(status, code):
    with pytest.raises(PermanentError) as caught:
        parse_run(run(status, error="node 3 failed"))
    assert caught.value.code == code


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {},
        {"data": "x"},
        run("running"),
        run(None),
        run("succeeded", outputs=["not", "a", "dict"]),
    ],
)
def test_malformed_answers_are_transient(payload):
    with pytest.raises(TransientError):
        parse_run(payload)


@pytest.mark.parametrize(
    "code",
    [
        "invalid_param",
        "app_unavailable",
        "provider_not_initialize",
        "provider_quota_exceeded",
        "model_currently_not_support",
        "completion_request_error",
    ],
)
def test_documented_400_codes_are_permanent(code):
    error = classify_http_error(400, f'{{"code": "{code}", "message": "m", "status": 400}}')
    assert isinstance(error, PermanentError)
    assert error.describe() == f"{code}: Dify answered HTTP 400: m"


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_not_found_are_permanent(status):
    assert isinstance(classify_http_error(status, ""), PermanentError)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 408])
def test_rate_limits_and_server_errors_are_transient(status):
    assert isinstance(classify_http_error(status, "<html>oops</html>"), TransientError)


def test_retry_after_is_kept_on_a_429():
    error = classify_http_error(429, "{}", "12")
    assert isinstance(error, TransientError)
    assert error.retry_after == 12


def test_retry_after_as_an_http_date():
    now = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


def test_a_huge_error_body_is_clipped():
    error = classify_http_error(500, "x" * 100_000)
    assert len(error.message) < 1100


def test_stream_error_events_follow_their_status():
    assert isinstance(
        classify_stream_error({"status": 400, "code": "invalid_param"}), PermanentError
    )
    assert isinstance(classify_stream_error({"status": 500, "code": "x"}), TransientError)
    assert isinstance(classify_stream_error({"code": "no status"}), TransientError)
