"""The worker's claim and retry decisions: pure functions on plain data."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.core.claims import Answer, ClaimVerdict, decide_after_error, decide_claim
from shared.core.errors import AppWideError, CapacityError, PermanentError, TransientError
from shared.core.model import Status, StoredRow

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def row(status, attempts=0, lease=None):
    return StoredRow("r", Status(status), attempts=attempts, lease_expires_at=lease)


@pytest.mark.parametrize(
    ("stored", "verdict"),
    [
        (None, ClaimVerdict.MISSING),
        (row("PENDING"), ClaimVerdict.CLAIM),
        (row("SUCCESS"), ClaimVerdict.FINISHED),
        (row("FAILED"), ClaimVerdict.FINISHED),
        (row("PROCESSING", 1, NOW + timedelta(seconds=1)), ClaimVerdict.BUSY),
        (row("PROCESSING", 1, NOW - timedelta(seconds=1)), ClaimVerdict.CLAIM),
        (row("PROCESSING", 1, NOW), ClaimVerdict.CLAIM),
        (row("PENDING", 5), ClaimVerdict.EXHAUSTED),
        (row("PROCESSING", 5, NOW - timedelta(seconds=1)), ClaimVerdict.EXHAUSTED),
        (row("SUCCESS", 9), ClaimVerdict.FINISHED),
    ],
)
def test_decide_claim(stored, verdict):
    assert decide_claim(stored, now=NOW, max_attempts=5) is verdict


def test_transient_errors_retry_until_the_last_attempt():
    error = TransientError("x", code="timeout")
    assert decide_after_error(error, attempt=4, max_attempts=5).status is Status.PENDING
    assert decide_after_error(error, attempt=4, max_attempts=5).retry
    last = decide_after_error(error, attempt=5, max_attempts=5)
    assert (last.status, last.retry) == (Status.FAILED, False)
    assert last.error == "gave up after 5 attempts (MAX_ATTEMPTS): timeout: x"


def test_permanent_errors_fail_at_once():
    after = decide_after_error(
        PermanentError("bad", code="invalid_param"), attempt=1, max_attempts=5
    )
    assert (after.status, after.retry, after.error) == (Status.FAILED, False, "invalid_param: bad")


def test_capacity_and_app_wide_failures_give_the_attempt_back():
    busy = decide_after_error(
        CapacityError("full", code="too_many_requests"), attempt=5, max_attempts=5
    )
    assert (busy.status, busy.answer, busy.charged) == (Status.PENDING, Answer.SLOW_QUEUE, False)
    wide = decide_after_error(
        AppWideError("401", code="unauthorized", remedy="fix the key"), attempt=5, max_attempts=5
    )
    assert (wide.status, wide.answer, wide.charged) == (Status.PENDING, Answer.PAUSE_QUEUE, False)


def test_a_rows_own_transient_failure_is_charged_and_retried_alone():
    after = decide_after_error(TransientError("500", code="x"), attempt=1, max_attempts=5)
    assert (after.answer, after.charged) == (Answer.RETRY_ROW, True)
