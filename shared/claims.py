"""Pure decisions of the worker: may a row be claimed, and what a failed run does to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.errors import BatchError, TransientError
from shared.model import FINISHED, Status, StoredRow


class ClaimVerdict(StrEnum):
    CLAIM = "claim"  # take it: PENDING, or PROCESSING whose claim expired
    FINISHED = "finished"  # SUCCESS/FAILED already: a duplicate delivery
    BUSY = "busy"  # PROCESSING under a live claim: another delivery is running it
    MISSING = "missing"  # no entity for that id
    EXHAUSTED = "exhausted"  # every allowed attempt used: mark FAILED without calling Dify


def decide_claim(row: StoredRow | None, *, now: datetime, max_attempts: int) -> ClaimVerdict:
    if row is None:
        return ClaimVerdict.MISSING
    if row.status in FINISHED:
        return ClaimVerdict.FINISHED
    if (
        row.status is Status.PROCESSING
        and row.lease_expires_at is not None
        and row.lease_expires_at > now
    ):
        return ClaimVerdict.BUSY
    if row.attempts >= max_attempts:
        return ClaimVerdict.EXHAUSTED
    return ClaimVerdict.CLAIM


@dataclass(frozen=True)
class AfterError:
    """What a failed run does to the row, and whether Cloud Tasks should deliver again."""

    status: Status
    retry: bool
    error: str


def decide_after_error(error: BatchError, *, attempt: int, max_attempts: int) -> AfterError:
    text = error.describe()
    if isinstance(error, TransientError):
        if attempt >= max_attempts:
            return AfterError(
                Status.FAILED, False, f"gave up after {attempt} attempts (MAX_ATTEMPTS): {text}"
            )
        return AfterError(Status.PENDING, True, text)
    return AfterError(Status.FAILED, False, text)
