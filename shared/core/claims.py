"""Pure decisions of the worker: may a row be claimed, and what a failed run does to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.core.errors import AppWideError, BatchError, CapacityError, TransientError
from shared.core.model import FINISHED, Status, StoredRow


class ClaimVerdict(StrEnum):
    CLAIM = "claim"  # take it: PENDING, or PROCESSING whose claim expired
    FINISHED = "finished"  # SUCCESS/FAILED already: a duplicate delivery
    BUSY = "busy"  # PROCESSING under a live claim: another delivery is running it
    MISSING = "missing"  # no entity for that id
    EXHAUSTED = "exhausted"  # every allowed attempt used: mark FAILED without calling Dify
    BAD_ENTITY = "bad_entity"  # an entity that cannot be read as a row: leave it, say why


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


class Answer(StrEnum):
    """What the failure asks of Cloud Tasks (and so which HTTP status the worker answers)."""

    DONE = "done"  # 200: the row is final
    RETRY_ROW = "retry_row"  # 500: this task backs off alone
    SLOW_QUEUE = "slow_queue"  # 429/503: Dify is full, the whole queue slows down
    PAUSE_QUEUE = "pause_queue"  # 503 after pausing the queue: every row would fail alike


@dataclass(frozen=True)
class AfterError:
    """What a failed run does to the row, and what Cloud Tasks should do next."""

    status: Status
    answer: Answer
    error: str
    charged: bool  # False: the attempt is given back (Dify started no run for this row)

    @property
    def retry(self) -> bool:
        return self.answer is not Answer.DONE


def decide_after_error(error: BatchError, *, attempt: int, max_attempts: int) -> AfterError:
    text = error.describe()
    if isinstance(error, AppWideError):
        return AfterError(Status.PENDING, Answer.PAUSE_QUEUE, text, charged=False)
    if isinstance(error, CapacityError):
        return AfterError(Status.PENDING, Answer.SLOW_QUEUE, text, charged=False)
    if isinstance(error, TransientError):
        if attempt >= max_attempts:
            return AfterError(
                Status.FAILED,
                Answer.DONE,
                f"gave up after {attempt} attempts (MAX_ATTEMPTS): {text}",
                charged=True,
            )
        return AfterError(Status.PENDING, Answer.RETRY_ROW, text, charged=True)
    return AfterError(Status.FAILED, Answer.DONE, text, charged=True)
