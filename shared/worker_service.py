"""process_row: one Cloud Tasks delivery -> at most one Dify run -> one recorded outcome."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from shared.claims import Answer, ClaimVerdict, decide_after_error
from shared.errors import AppWideError, BatchError, PermanentError, TransientError
from shared.logs import get_logger
from shared.model import Status, WorkflowRun
from shared.store import StatusStore, result_budget_bytes

log = get_logger("worker")


class Workflow(Protocol):
    def run(self, inputs: dict[str, Any], *, deadline: float | None = None) -> WorkflowRun: ...


class QueuePauser(Protocol):
    def pause(self, *, code: str, reason: str, row_id: str) -> None: ...

    def resume_hint(self) -> str: ...


class TaskResult(StrEnum):
    SUCCEEDED = "succeeded"  # row SUCCESS
    FAILED = "failed"  # row FAILED, no retry
    RETRY = "retry"  # row back to PENDING after its own glitch (charged): retry this task
    DIFY_BUSY = "dify_busy"  # Dify at capacity, no run started (uncharged): slow the queue
    PAUSED = "paused"  # every row would fail alike (uncharged): the queue is paused
    DUPLICATE = "duplicate"  # row finished or running elsewhere; nothing done
    MISSING = "missing"  # no entity for that id; nothing done
    CLAIM_LOST = "claim_lost"  # our lease expired and another delivery took the row


@dataclass(frozen=True)
class WorkerOutcome:
    result: TaskResult
    row_id: str
    attempt: int
    detail: str = ""
    retry_after: float | None = None


class WorkerService:
    def __init__(
        self,
        *,
        store: StatusStore,
        workflow: Workflow,
        max_attempts: int,
        lease_seconds: float,
        queue: Callable[[], QueuePauser | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._workflow = workflow
        self._max_attempts = max_attempts
        self._lease_seconds = lease_seconds
        # Built on first use: most instances never pause anything, and the Cloud Tasks client
        # is slow to import.
        self._queue = queue
        self._clock = clock

    def process_row(self, row_id: str) -> WorkerOutcome:
        started = self._clock()
        outcome = self._process(row_id)
        log.log(
            _LOG_LEVELS.get(outcome.result, logging.INFO),
            "row %s: %s",
            row_id,
            outcome.result.value,
            extra={
                "event": "row_outcome",
                "row_id": row_id,
                "outcome": outcome.result.value,
                "attempt": outcome.attempt,
                "duration_s": round(self._clock() - started, 3),
                "detail": outcome.detail,
            },
        )
        return outcome

    def _process(self, row_id: str) -> WorkerOutcome:
        claim = self._store.claim(
            row_id, max_attempts=self._max_attempts, lease_seconds=self._lease_seconds
        )
        row = claim.row
        if claim.verdict is ClaimVerdict.MISSING or row is None:
            return WorkerOutcome(
                TaskResult.MISSING, row_id, 0, "no status entity for this id; was it deleted?"
            )
        if claim.verdict in (ClaimVerdict.FINISHED, ClaimVerdict.BUSY):
            return WorkerOutcome(
                TaskResult.DUPLICATE, row_id, row.attempts, f"row is {row.status.value} already"
            )
        if claim.verdict is ClaimVerdict.EXHAUSTED:
            error = (
                f"gave up: all {self._max_attempts} attempts (MAX_ATTEMPTS) are used; "
                f"last error: {row.error or 'none recorded'}"
            )
            self._store.finish(row_id, claim_id=None, changes=_failed(error))
            return WorkerOutcome(TaskResult.FAILED, row_id, row.attempts, error)

        attempt, claim_id = claim.attempt, claim.claim_id
        try:
            if row.inputs is None:
                raise PermanentError(
                    "the stored inputs are not a JSON object; fix the entity or re-run the loader",
                    code="bad_inputs",
                )
            run = self._workflow.run(row.inputs)
            changes = _succeeded(run, json.dumps(row.inputs, ensure_ascii=False))
        except BatchError as exc:
            return self._record_error(row_id, claim_id, attempt, exc)
        except Exception as exc:  # a bug or an unforeseen library error: bounded by MAX_ATTEMPTS
            log.exception("unexpected error running row %s", row_id)
            unexpected = TransientError(f"unexpected {type(exc).__name__}", code="internal")
            return self._record_error(row_id, claim_id, attempt, unexpected)

        if not self._store.finish(row_id, claim_id=claim_id, changes=changes):
            return WorkerOutcome(TaskResult.CLAIM_LOST, row_id, attempt, "result discarded")
        if changes["status"] == Status.FAILED:
            return WorkerOutcome(TaskResult.FAILED, row_id, attempt, changes["error"])
        return WorkerOutcome(TaskResult.SUCCEEDED, row_id, attempt, run.workflow_run_id or "")

    def _record_error(
        self, row_id: str, claim_id: str | None, attempt: int, error: BatchError
    ) -> WorkerOutcome:
        after = decide_after_error(error, attempt=attempt, max_attempts=self._max_attempts)
        changes: dict[str, Any] = {"status": after.status.value, "error": after.error}
        if error.workflow_run_id:
            changes["workflow_run_id"] = error.workflow_run_id
        if not after.charged:
            changes["attempts"] = attempt - 1  # Dify started no run for this row
        if after.status is Status.FAILED:
            changes["finished_at"] = datetime.now(UTC)
        if not self._store.finish(row_id, claim_id=claim_id, changes=changes):
            return WorkerOutcome(TaskResult.CLAIM_LOST, row_id, attempt, after.error)
        retry_after = error.retry_after if isinstance(error, TransientError) else None
        if after.answer is Answer.PAUSE_QUEUE:
            assert isinstance(error, AppWideError)
            return self._pause(row_id, attempt, error)
        if after.answer is Answer.SLOW_QUEUE:
            return WorkerOutcome(TaskResult.DIFY_BUSY, row_id, attempt, after.error, retry_after)
        if after.answer is Answer.RETRY_ROW:
            return WorkerOutcome(TaskResult.RETRY, row_id, attempt, after.error, retry_after)
        return WorkerOutcome(TaskResult.FAILED, row_id, attempt, after.error)

    def _pause(self, row_id: str, attempt: int, error: AppWideError) -> WorkerOutcome:
        """Every row would fail like this one: stop the queue rather than fail them all."""
        queue = self._queue()
        if queue is None:
            done = "no queue is configured (TASKS_QUEUE), so nothing was paused"
        else:
            try:
                queue.pause(code=error.code, reason=error.describe(), row_id=row_id)
                done = f"the queue is paused; {queue.resume_hint()}"
            except TransientError as exc:
                done = f"pausing the queue failed ({exc.describe()})"
        log.error(
            "Dify fails every row alike: %s. To do: %s. Rows are not charged for it; %s",
            error.describe(),
            error.remedy,
            done,
            extra={"event": "batch_paused", "row_id": row_id, "code": error.code},
        )
        return WorkerOutcome(TaskResult.PAUSED, row_id, attempt - 1, error.describe())


_LOG_LEVELS = {
    TaskResult.MISSING: logging.ERROR,
    TaskResult.FAILED: logging.WARNING,
    TaskResult.RETRY: logging.WARNING,
    TaskResult.DIFY_BUSY: logging.WARNING,
    TaskResult.CLAIM_LOST: logging.WARNING,
}


def _failed(error: str) -> dict[str, Any]:
    return {"status": Status.FAILED.value, "error": error, "finished_at": datetime.now(UTC)}


def _succeeded(run: WorkflowRun, inputs_json: str) -> dict[str, Any]:
    common = {
        "workflow_run_id": run.workflow_run_id,
        "elapsed_time": run.elapsed_time,
        "total_tokens": run.total_tokens,
    }
    result = json.dumps(run.outputs, ensure_ascii=False)
    size, budget = len(result.encode()), result_budget_bytes(inputs_json)
    if size > budget:
        # Retrying would produce the same output: record why, and where the full output lives.
        return {
            **_failed(
                f"output_too_large: the workflow's outputs are {size} bytes of JSON, more than "
                f"the {budget} bytes a Datastore entity can hold beside the inputs (~1 MiB); "
                f"not stored. Fetch them from Dify (GET /v1/workflows/run/"
                f"{run.workflow_run_id}) or make the workflow return less."
            ),
            **common,
        }
    return {
        "status": Status.SUCCESS.value,
        "result": result,
        "error": None,
        "finished_at": datetime.now(UTC),
        **common,
    }
