"""process_row: one Cloud Tasks delivery -> at most one Dify run -> one recorded outcome."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from shared.adapters.logs import get_logger
from shared.adapters.store import StatusStore, result_budget_bytes
from shared.core.claims import Answer, ClaimVerdict, decide_after_error
from shared.core.errors import (
    AppWideError,
    BatchError,
    PermanentError,
    SpendLimitReached,
    TransientError,
)
from shared.core.model import Status, WorkflowRun
from shared.core.redact import scrub
from shared.core.spend import SpendLimits, limit_reached
from shared.core.text import storable, storable_value

# The final write must end this long before the lease does, so no other delivery can take the
# row over while this one still writes.
LEASE_SAFETY_S = 2.0

log = get_logger("worker")


# How long a failure recognised only from a run's error text waits for a second, different
# row to fail the same way before it is forgotten (then the batch pauses).
TEXT_FAILURE_WINDOW_S = 30 * 60.0


class Workflow(Protocol):
    @property
    def timeout_s(self) -> float: ...

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
    BUSY = "busy"  # another delivery holds a live claim: keep the task, come back later
    NOT_RECORDED = "not_recorded"  # the run ended but its outcome could not be written
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
        workflows: Mapping[str, Workflow],
        max_attempts: int,
        lease_seconds: float,
        default_workflow: str = "default",
        queue: Callable[[str], QueuePauser | None] = lambda _name: None,
        clock: Callable[[], float] = time.monotonic,
        spend_limits: SpendLimits | None = None,
    ) -> None:
        self._store = store
        self._spend_limits = spend_limits or SpendLimits()
        self._workflows = workflows
        self._default = default_workflow
        self._max_attempts = max_attempts
        self._lease_seconds = lease_seconds
        # Built on first use: most instances never pause anything, and the Cloud Tasks client
        # is slow to import.
        self._queue = queue
        self._clock = clock
        # Failures recognised only from a run's error text: code -> the first row met with it.
        # Kept TEXT_FAILURE_WINDOW_S and forgotten when a run succeeds, so an old one-off
        # cannot pause the batch hours later together with an unrelated row.
        self._text_failures: dict[str, tuple[str, float]] = {}
        self._text_lock = threading.Lock()

    def process_row(self, row_id: str) -> WorkerOutcome:
        started = self._clock()
        outcome = self._process(row_id)
        outcome = replace(outcome, detail=scrub(outcome.detail))
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
        # Everything this attempt does ends inside the claim's lease: the Dify call (with its
        # lookups and stop) by `run_deadline`, the final write by `write_deadline`.
        claimed_at = self._clock()
        write_deadline = claimed_at + self._lease_seconds - LEASE_SAFETY_S
        row = claim.row
        if claim.verdict is ClaimVerdict.BAD_ENTITY:
            return WorkerOutcome(TaskResult.MISSING, row_id, 0, claim.detail)
        if claim.verdict is ClaimVerdict.MISSING or row is None:
            return WorkerOutcome(
                TaskResult.MISSING, row_id, 0, "no status entity for this id; was it deleted?"
            )
        if claim.verdict is ClaimVerdict.FINISHED:
            return WorkerOutcome(
                TaskResult.DUPLICATE, row_id, row.attempts, f"row is {row.status.value} already"
            )
        if claim.verdict is ClaimVerdict.BUSY:
            # Not a 200: if the claim's holder died, this task is what finishes the row once
            # the lease has passed (the row may have left the sheet by then).
            return WorkerOutcome(
                TaskResult.BUSY,
                row_id,
                row.attempts,
                f"another delivery holds the row until {row.lease_expires_at}; retry later",
            )
        if claim.verdict is ClaimVerdict.EXHAUSTED:
            error = (
                f"gave up: all {self._max_attempts} attempts (MAX_ATTEMPTS) are used; "
                f"last error: {row.error or 'none recorded'}"
            )
            self._store.finish(row_id, claim_id=None, changes=_failed(error))
            return WorkerOutcome(TaskResult.FAILED, row_id, row.attempts, error)

        attempt, claim_id = claim.attempt, claim.claim_id
        name = row.workflow or self._default
        workflow = self._workflows.get(name)
        try:
            if workflow is None:
                raise PermanentError(
                    f"the row names workflow {name!r}, which WORKFLOWS does not have "
                    f"({', '.join(self._workflows)})",
                    code="unknown_workflow",
                )
            if row.inputs is None:
                raise PermanentError(
                    "the stored inputs are not a JSON object; fix the entity or re-run the loader",
                    code="bad_inputs",
                )
            spent = self._spend_before(name)
            run = workflow.run(row.inputs, deadline=claimed_at + workflow.timeout_s)
            changes = _succeeded(run, json.dumps(row.inputs, ensure_ascii=False))
            if row.error and changes["status"] == Status.SUCCESS:
                changes["last_error"] = row.error[:2000]  # why it took more than one attempt
        except BatchError as exc:
            return self._record_error(row_id, claim_id, attempt, exc, write_deadline, name)
        except Exception as exc:  # a bug or an unforeseen library error: bounded by MAX_ATTEMPTS
            log.exception("unexpected error running row %s", row_id)
            unexpected = TransientError(f"unexpected {type(exc).__name__}", code="internal")
            return self._record_error(row_id, claim_id, attempt, unexpected, write_deadline)
        outcome = self._record_run(row_id, claim_id, attempt, run, changes, write_deadline)
        if spent is not None and outcome.result in (TaskResult.SUCCEEDED, TaskResult.FAILED):
            self._spend_after(row_id, attempt, name, row.workflow or "", spent, run.total_tokens)
        return outcome

    def _spend_before(self, workflow: str) -> dict[str, int] | None:
        """With a spend limit: the tokens charged so far (one query of the counter's shards),
        or SpendLimitReached when the limit is reached already. Without one: None, no read."""
        if not self._spend_limits.active:
            return None
        spent = self._store.spend_totals()
        reason = limit_reached(
            spent, self._spend_limits, workflows=[workflow], default=self._default
        )
        if reason:
            raise SpendLimitReached(reason)
        return spent

    def _spend_after(
        self,
        row_id: str,
        attempt: int,
        workflow: str,
        counted_as: str,
        spent: dict[str, int],
        tokens: int | None,
    ) -> None:
        """Pause as soon as this row's tokens reach the limit. Rows charged meanwhile by other
        instances are not re-read here: the next row's check sees them."""
        if not tokens:
            return
        after = {**spent, counted_as: spent.get(counted_as, 0) + tokens}
        reason = limit_reached(
            after, self._spend_limits, workflows=[workflow], default=self._default
        )
        if reason:
            self._pause(row_id, attempt, SpendLimitReached(reason), workflow)

    def _write(
        self, row_id: str, claim_id: str | None, changes: dict[str, Any], deadline: float
    ) -> bool:
        """finish(), retried while the lease lasts. The spend counter is written only while a
        limit is set: at the queue's concurrency its shards are contended, and a batch without
        a limit should not pay for that (measured: bench/results.md)."""
        return self._store.finish(
            row_id,
            claim_id=claim_id,
            changes=changes,
            retry_for=deadline - self._clock(),
            charge_tokens=self._spend_limits.active,
        )

    def _record_run(
        self,
        row_id: str,
        claim_id: str | None,
        attempt: int,
        run: WorkflowRun,
        changes: dict[str, Any],
        deadline: float,
    ) -> WorkerOutcome:
        """Write a finished run. A result Datastore refuses becomes a FAILED row that says why
        (the run is not repeated); one that cannot be written in time is lost (logged), and
        the row runs again once its lease has passed."""
        try:
            if not self._write(row_id, claim_id, changes, deadline):
                return WorkerOutcome(TaskResult.CLAIM_LOST, row_id, attempt, "result discarded")
        except PermanentError as refused:
            changes = {
                **_failed(
                    f"{refused.describe()}. The run succeeded in Dify: fetch its outputs with "
                    f"GET /v1/workflows/run/{run.workflow_run_id}"
                ),
                "workflow_run_id": run.workflow_run_id,
            }
            return self._record_error_changes(row_id, claim_id, attempt, changes, deadline)
        except TransientError as unavailable:
            return self._not_recorded(row_id, attempt, run.workflow_run_id, unavailable)
        if changes["status"] == Status.FAILED:
            return WorkerOutcome(TaskResult.FAILED, row_id, attempt, changes["error"])
        if self._text_failures:  # Dify serves rows again: what one row met was its own
            with self._text_lock:
                self._text_failures.clear()
        return WorkerOutcome(TaskResult.SUCCEEDED, row_id, attempt, run.workflow_run_id or "")

    def _record_error_changes(
        self,
        row_id: str,
        claim_id: str | None,
        attempt: int,
        changes: dict[str, Any],
        deadline: float,
    ) -> WorkerOutcome:
        try:
            if not self._write(row_id, claim_id, changes, deadline):
                return WorkerOutcome(TaskResult.CLAIM_LOST, row_id, attempt, changes["error"])
        except BatchError as exc:
            return self._not_recorded(row_id, attempt, changes.get("workflow_run_id"), exc)
        return WorkerOutcome(TaskResult.FAILED, row_id, attempt, changes["error"])

    def _not_recorded(
        self, row_id: str, attempt: int, run_id: str | None, error: BatchError
    ) -> WorkerOutcome:
        log.error(
            "row %s: the outcome of Dify run %s could not be written (%s); the row stays "
            "PROCESSING until its lease passes, then its task runs it again",
            row_id,
            run_id,
            error.describe(),
            extra={"event": "outcome_not_recorded", "row_id": row_id, "workflow_run_id": run_id},
        )
        return WorkerOutcome(TaskResult.NOT_RECORDED, row_id, attempt, error.describe())

    def _record_error(
        self,
        row_id: str,
        claim_id: str | None,
        attempt: int,
        error: BatchError,
        deadline: float,
        workflow: str = "",
    ) -> WorkerOutcome:
        error = self._one_row_or_app_wide(error, row_id)
        after = decide_after_error(error, attempt=attempt, max_attempts=self._max_attempts)
        changes: dict[str, Any] = {
            "status": after.status.value,
            "error": storable(scrub(after.error)),
        }
        if error.workflow_run_id:
            changes["workflow_run_id"] = error.workflow_run_id
        if not after.charged:
            changes["attempts"] = attempt - 1  # Dify started no run for this row
        if after.status is Status.FAILED:
            changes.update(finished_at=datetime.now(UTC), write_pending=True)
        try:
            if not self._write(row_id, claim_id, changes, deadline):
                return WorkerOutcome(TaskResult.CLAIM_LOST, row_id, attempt, after.error)
        except BatchError as exc:
            return self._not_recorded(row_id, attempt, error.workflow_run_id, exc)
        retry_after = error.retry_after if isinstance(error, TransientError) else None
        if after.answer is Answer.PAUSE_QUEUE:
            assert isinstance(error, AppWideError)
            return self._pause(row_id, attempt, error, workflow)
        if after.answer is Answer.SLOW_QUEUE:
            return WorkerOutcome(TaskResult.DIFY_BUSY, row_id, attempt, after.error, retry_after)
        if after.answer is Answer.RETRY_ROW:
            return WorkerOutcome(TaskResult.RETRY, row_id, attempt, after.error, retry_after)
        return WorkerOutcome(TaskResult.FAILED, row_id, attempt, after.error)

    def _one_row_or_app_wide(self, error: BatchError, row_id: str) -> BatchError:
        """An app-wide failure known only from a run's error text (which can echo the row's
        own cells) pauses the batch once a second, different row meets it; until then it is
        this row's own, retried failure. Dify's structured answers pause at once."""
        if not isinstance(error, AppWideError) or not error.from_text:
            return error
        now = self._clock()
        with self._text_lock:
            first, seen_at = self._text_failures.get(error.code, (row_id, now))
            if now - seen_at > TEXT_FAILURE_WINDOW_S:
                first, seen_at = row_id, now
            self._text_failures[error.code] = (first, seen_at)
        if first != row_id:
            return error
        return TransientError(
            f"{error.message} (the batch pauses if another row fails the same way)",
            code=error.code,
            workflow_run_id=error.workflow_run_id,
        )

    def _pause(
        self, row_id: str, attempt: int, error: AppWideError, workflow: str
    ) -> WorkerOutcome:
        """Every row would fail like this one: stop the queue (that workflow's) rather than
        fail them all."""
        queue = self._queue(workflow or self._default)
        spend = isinstance(error, SpendLimitReached)
        if queue is None:
            done = "no queue is configured (TASKS_QUEUE), so nothing was paused"
        else:
            try:
                # The note the operator reads (status, the loader's answer) says what to do;
                # a spend pause's note is exactly "spend limit reached: N of M tokens".
                reason = error.message if spend else f"{error.describe()}. To do: {error.remedy}"
                queue.pause(code=error.code, reason=reason, row_id=row_id)
                done = f"the queue is paused; {queue.resume_hint()}"
            except TransientError as exc:
                done = f"pausing the queue failed ({exc.describe()})"
        if spend:  # the alert's line (event name is a contract)
            log.error(
                "%s. To do: %s; %s",
                error.message,
                error.remedy,
                done,
                extra={"event": "spend_limit_reached", "row_id": row_id, "workflow": workflow},
            )
        log.error(
            "%s: %s. To do: %s. Rows are not charged for it; %s",
            "the spend limit is reached" if spend else "Dify fails every row alike",
            error.describe(),
            error.remedy,
            done,
            extra={"event": "batch_paused", "row_id": row_id, "code": error.code},
        )
        return WorkerOutcome(TaskResult.PAUSED, row_id, attempt - 1, error.describe())


_LOG_LEVELS = {
    TaskResult.MISSING: logging.ERROR,
    TaskResult.NOT_RECORDED: logging.ERROR,
    TaskResult.BUSY: logging.WARNING,
    TaskResult.FAILED: logging.WARNING,
    TaskResult.RETRY: logging.WARNING,
    TaskResult.DIFY_BUSY: logging.WARNING,
    TaskResult.CLAIM_LOST: logging.WARNING,
}


def _failed(error: str) -> dict[str, Any]:
    return {
        "status": Status.FAILED.value,
        "error": error,
        "finished_at": datetime.now(UTC),
        "write_pending": True,  # for the sheet write-back (an indexed query finds it)
    }


def _succeeded(run: WorkflowRun, inputs_json: str) -> dict[str, Any]:
    common = {
        "workflow_run_id": run.workflow_run_id,
        "elapsed_time": run.elapsed_time,
        "total_tokens": run.total_tokens,
    }
    # A lone surrogate (an emoji cut in half by a code node) is stored as U+FFFD rather than
    # failing the same way on every retry.
    result = json.dumps(storable_value(run.outputs), ensure_ascii=False)
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
        "write_pending": True,
        **common,
    }
