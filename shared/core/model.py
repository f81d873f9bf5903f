"""Plain data shared by the loader and the worker: statuses, stored rows, workflow runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

KIND = "dify_batch_process_status"


class Status(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


FINISHED = frozenset({Status.SUCCESS, Status.FAILED})


@dataclass(frozen=True)
class StoredRow:
    """What the decisions need to know about a row's status entity."""

    row_id: str
    status: Status
    attempts: int = 0
    generation: int = 0
    inputs_hash: str | None = None
    lease_expires_at: datetime | None = None
    claim_id: str | None = None
    error: str | None = None
    # None when the stored inputs are not a JSON object (written by hand, say).
    inputs: dict[str, Any] | None = field(default_factory=dict)
    workflow: str | None = None


@dataclass(frozen=True)
class WorkflowRun:
    """A finished Dify run, from the blocking answer or the `workflow_finished` event."""

    workflow_run_id: str | None
    status: str
    outputs: dict[str, Any]
    elapsed_time: float | None = None
    total_tokens: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class NewRow:
    row_id: str
    inputs: dict[str, Any]
    inputs_hash: str
    row_number: int
    # A row the input check refused is recorded FAILED at once, with the reason (no task).
    error: str | None = None
    workflow: str = ""  # with several workflows: the one it runs on


@dataclass(frozen=True)
class Transition:
    """Change a row only if it is still `expect_status` at `expect_generation` (and, when set,
    its lease expired before `lease_expired_before`)."""

    row_id: str
    expect_status: Status
    expect_generation: int
    changes: dict[str, Any] = field(default_factory=dict)
    lease_expired_before: datetime | None = None
