"""Classifying Dify's answers: pure functions, no I/O."""

import json
from datetime import UTC, datetime

import pytest

from shared.core.errors import AppWideError, CapacityError, PermanentError, TransientError
from shared.core.outcomes import (
    MAX_RETRY_AFTER_S,
    classify_http_error,
    classify_stream_error,
    parse_retry_after,
    parse_run,
)


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
    [None, [], {}, {"data": "x"}, run(None), run("weird")],
)
def test_malformed_answers_are_the_rows_transient_failure(payload):
    with pytest.raises(TransientError) as caught:
        parse_run(payload)
    assert type(caught.value) is TransientError  # charged, not a capacity or app-wide case


def test_outputs_that_are_no_object_fail_the_same_way_every_time():
    with pytest.raises(PermanentError) as caught:
        parse_run(run("succeeded", outputs=["not", "a", "dict"]))
    assert (caught.value.code, caught.value.workflow_run_id) == ("malformed", "r1")


def test_a_run_lookups_outputs_given_as_a_json_string_are_read():
    assert parse_run(run("succeeded", outputs='{"a": 1}')).outputs == {"a": 1}


def body(code, message="m", status=400):
    return json.dumps({"code": code, "message": message, "status": status})


CONCURRENCY = (
    "Too many requests. Please try again later. The current maximum concurrent requests "
    "allowed for my-app is 3."
)


@pytest.mark.parametrize(("status", "code"), [(400, "invalid_param"), (429, "too_many_requests")])
def test_the_apps_concurrency_limit_is_capacity_in_both_forms(status, code):
    error = classify_http_error(status, body(code, CONCURRENCY, status))
    assert type(error) is CapacityError
    assert error.code == "too_many_requests"
    assert error.retry_after is None


@pytest.mark.parametrize("status", [502, 503, 504, 524])
def test_proxy_and_overload_answers_are_capacity(status):
    error = classify_http_error(status, "<html>cloudflare</html>", "7")
    assert type(error) is CapacityError
    assert error.retry_after == 7


def test_another_429_is_a_throttle_with_its_retry_after():
    error = classify_http_error(429, "<html>error 1015</html>", "12")
    assert type(error) is CapacityError
    assert error.retry_after == 12


@pytest.mark.parametrize("status", [500, 408])
def test_a_500_or_408_is_the_rows_own_transient_failure(status):
    error = classify_http_error(status, body("internal_server_error", status=status))
    assert type(error) is TransientError


@pytest.mark.parametrize(
    "kind", ["Rate Limit Error", "Connection Error", "Server Unavailable Error"]
)
def test_upstream_model_errors_are_transient_as_400_and_as_failed_runs(kind):
    message = f"[openai] {kind}, Error code: 429 - slow down"
    error = classify_http_error(400, body("completion_request_error", message))
    assert (type(error), error.code) == (TransientError, "upstream_model_error")
    with pytest.raises(TransientError) as caught:
        parse_run(run("failed", error=message))
    assert (type(caught.value), caught.value.workflow_run_id) == (TransientError, "r1")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "unauthorized"),
        (403, "forbidden"),
        (404, "not_found"),
        (400, "app_unavailable"),
        (400, "not_workflow_app"),
        (400, "provider_not_initialize"),
        (400, "provider_quota_exceeded"),
        (400, "model_currently_not_support"),
        (429, "rate_limit_error"),
    ],
)
def test_failures_every_row_would_meet_are_app_wide(status, code):
    error = classify_http_error(status, body(code, "m", status))
    assert isinstance(error, AppWideError)
    assert error.code == code
    assert "resume" in error.remedy
    assert error.bad_key is (status == 401)


def test_app_wide_without_a_body_is_named_by_its_status():
    assert classify_http_error(401, "").code == "unauthorized"


def test_wrong_model_credentials_are_app_wide():
    error = classify_http_error(
        400, body("completion_request_error", "[openai] Incorrect model credentials provided")
    )
    assert isinstance(error, AppWideError)


@pytest.mark.parametrize(
    "message", ["inputs.question is required in input form", "question must be one of a, b"]
)
def test_a_rows_own_bad_inputs_are_permanent(message):
    error = classify_http_error(400, body("invalid_param", message))
    assert type(error) is PermanentError
    assert error.describe() == f"invalid_param: Dify answered HTTP 400: {message}"


def test_an_unknown_400_is_permanent():
    assert type(classify_http_error(400, body("completion_request_error", "node 3"))) is (
        PermanentError
    )


def test_retry_after_is_kept_on_a_429():
    error = classify_http_error(429, "{}", "12")
    assert isinstance(error, TransientError)
    assert error.retry_after == 12


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("12", 12), ("99999999999999999999", MAX_RETRY_AFTER_S), ("²", None), ("-3", None)],
)
def test_retry_after_is_ascii_digits_and_capped(value, seconds):
    assert parse_retry_after(value) == seconds


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
    paused = classify_stream_error(
        {"status": 400, "code": "provider_quota_exceeded", "workflow_run_id": "r9"}
    )
    assert (type(paused), paused.workflow_run_id) == (AppWideError, "r9")
    assert isinstance(classify_stream_error({"code": "no status"}), TransientError)


def test_a_403_is_app_wide_only_with_difys_own_json():
    assert isinstance(classify_http_error(403, body("forbidden", "app disabled")), AppWideError)
    error = classify_http_error(403, "<html>Request blocked</html>")
    assert (type(error), error.code) == (PermanentError, "forbidden_by_proxy")


def test_a_file_host_that_is_down_is_transient():
    error = classify_http_error(
        400, body("invalid_param", "Reached maximum retries (3) for URL http://h/a.pdf")
    )
    assert (type(error), error.code) == (TransientError, "file_unreachable")


def test_the_concurrency_limit_is_named_with_what_to_change():
    message = (
        "Too many requests. Please try again later. The current maximum concurrent requests "
        "allowed for 7e444c29-925c-4095-a028-f4e068b7a9db is 2."
    )
    error = classify_http_error(400, body("invalid_param", message))
    assert isinstance(error, CapacityError)
    assert "max_active_requests, is 2" in error.message


def test_a_providers_used_up_quota_is_app_wide_but_known_only_from_text():
    message = "[openai] Rate Limit Error, Error code: 429 - {'code': 'insufficient_quota'}"
    error = classify_http_error(400, body("completion_request_error", message))
    assert isinstance(error, AppWideError)
    assert (error.code, error.from_text) == ("provider_quota", True)
    plain = classify_http_error(400, body("completion_request_error", "[openai] Rate Limit Error"))
    assert (type(plain), plain.code) == (TransientError, "upstream_model_error")
