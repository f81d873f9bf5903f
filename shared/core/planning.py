"""Pure: decide what the loader does with each sheet row, given what Datastore holds.

plan() is the loader's brain: sheet rows + stored statuses (+ the queue's live task names)
-> new entities, guarded transitions, and the tasks to create.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.core.form_check import CHECK_PREFIX
from shared.core.model import NewRow, Status, StoredRow, Transition
from shared.core.rows import SheetRow


@dataclass(frozen=True)
class LoadOptions:
    dry_run: bool = False
    retry_failed: bool = False
    reprocess_changed: bool = False
    resume: bool = False  # resume a paused queue first (after the operator fixed the cause)
    write_back_only: bool = False  # only write finished rows' outcomes into the sheet
    pause: bool = False  # only pause the queue(s) (the operator's `dify-batch pause`)
    retry_ids: frozenset[str] = frozenset()  # these FAILED rows run again (`dify-batch retry`)


@dataclass(frozen=True)
class Enqueue:
    row_id: str
    generation: int
    reason: str  # new, lost_task, expired_lease, retry_failed, retry_selected, reprocess_changed
    workflow: str = ""  # whose queue the task goes to ("": the default)


@dataclass
class Plan:
    new_rows: list[NewRow] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    # Tasks for rows re-enqueued through a transition, keyed by row id (created only if the
    # transition applied).
    requeue: dict[str, Enqueue] = field(default_factory=dict)
    # PENDING rows edited in the sheet before they ran: they run with the new inputs.
    inputs_updated: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def re_enqueued_by_reason(self) -> dict[str, int]:
        return count_reasons(self.requeue.values())


def count_reasons(items: Iterable[Enqueue]) -> dict[str, int]:
    return dict(Counter(item.reason for item in items))


def task_id(namespace: str | None, row_id: str, generation: int) -> str:
    """The Cloud Tasks task id of a row's generation: a hash, as Google advises (sequential
    names slow creation down), and the same on every run, so a second run can't enqueue twice."""
    key = json.dumps([namespace or "", row_id, generation], ensure_ascii=False)
    return "row-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _reset(row: StoredRow, **extra: Any) -> dict[str, Any]:
    """Back to PENDING under a new generation, so the new task gets a name never used."""
    return {
        "status": Status.PENDING.value,
        "generation": row.generation + 1,
        "claim_id": None,
        "lease_expires_at": None,
        **extra,
    }


def plan(
    rows: list[SheetRow],
    stored: dict[str, StoredRow],
    *,
    now: datetime,
    options: LoadOptions,
    live_task_ids: frozenset[str] | None,
    namespace: str | None,
    expired_claims: Iterable[StoredRow] = (),
) -> Plan:
    """`live_task_ids` is the set of task ids in the queue, or None when no stored row is
    PENDING (then it is not needed). `expired_claims` are PROCESSING rows whose lease passed,
    found by a query: those no longer in the sheet (or its filter) are recovered too, since
    nothing else would ever finish them."""
    result = Plan()
    row_workflow = {r.row_id: r.workflow for r in rows}

    def requeue(
        row: StoredRow,
        reason: str,
        changes: dict[str, Any],
        lease_expired_before: datetime | None = None,
    ) -> None:
        result.transitions.append(
            Transition(row.row_id, row.status, row.generation, changes, lease_expired_before)
        )
        workflow = row_workflow.get(row.row_id, row.workflow or "")
        result.requeue[row.row_id] = Enqueue(row.row_id, row.generation + 1, reason, workflow)

    for sheet_row in rows:
        row = stored.get(sheet_row.row_id)
        if row is None:
            result.new_rows.append(
                NewRow(
                    sheet_row.row_id,
                    dict(sheet_row.inputs),
                    sheet_row.inputs_hash,
                    sheet_row.row_number,
                    workflow=sheet_row.workflow,
                )
            )
            continue
        changed = row.inputs_hash != sheet_row.inputs_hash
        new_inputs: dict[str, Any] = {}
        if changed:
            new_inputs = {
                "inputs": json.dumps(sheet_row.inputs, ensure_ascii=False),
                "inputs_hash": sheet_row.inputs_hash,
                "row_number": sheet_row.row_number,
            }
            if sheet_row.workflow:
                new_inputs["workflow"] = sheet_row.workflow
        if row.status in (Status.SUCCESS, Status.FAILED):
            if (
                row.status is Status.FAILED
                and changed
                and (row.error or "").startswith(CHECK_PREFIX)
            ):
                # Refused by the input check, and its cells were fixed: it runs by itself.
                requeue(
                    row,
                    "inputs_fixed",
                    _reset(row, **new_inputs, attempts=0, error=None, write_pending=False),
                )
            elif options.reprocess_changed and changed:
                requeue(
                    row,
                    "reprocess_changed",
                    _reset(row, **new_inputs, attempts=0, error=None, result=None),
                )
            elif options.retry_failed and row.status is Status.FAILED:
                requeue(row, "retry_failed", _reset(row, attempts=0))
            elif row.status is Status.FAILED and row.row_id in options.retry_ids:
                requeue(row, "retry_selected", _reset(row, attempts=0))
            else:
                result.skipped[row.status.value] += 1
        elif row.status is Status.PROCESSING:
            if row.lease_expires_at is not None and row.lease_expires_at <= now:
                requeue(row, "expired_lease", _reset(row, **new_inputs), lease_expired_before=now)
            else:
                result.skipped[Status.PROCESSING.value] += 1
        elif live_task_ids is not None and (
            task_id(namespace, row.row_id, row.generation) not in live_task_ids
        ):
            requeue(row, "lost_task", _reset(row, **new_inputs))
        else:
            result.skipped[Status.PENDING.value] += 1  # its task is queued
            if changed:
                result.transitions.append(
                    Transition(row.row_id, row.status, row.generation, new_inputs)
                )
                result.inputs_updated.append(row.row_id)
    in_sheet = {r.row_id for r in rows}
    for row in expired_claims:
        if row.row_id in in_sheet or row.lease_expires_at is None or row.lease_expires_at > now:
            continue
        requeue(row, "expired_lease", _reset(row), lease_expired_before=now)
    return result


# -- a sheet at rest: rows that need no read ---------------------------------------------------

Digest = dict[str, tuple[str, str]]  # row id -> (stored inputs_hash, SUCCESS or FAILED)
_FINISHED = (Status.SUCCESS.value, Status.FAILED.value)


def quiet_rows(
    rows: Iterable[SheetRow],
    digest: Digest,
    *,
    unfinished: set[str],
    failed: set[str] | None,
) -> dict[str, str]:
    """Rows the loader can leave without reading their entity (row id -> status), because
    reading it could change nothing: the last run saw the row finished with these very inputs,
    and no query finds it PENDING or PROCESSING now (whoever set that: a worker, the loader,
    a hand edit). `failed` (retry_failed) holds every FAILED row, which is then read. Any other
    row is read and planned as before."""
    quiet: dict[str, str] = {}
    for row in rows:
        seen = digest.get(row.row_id)
        if seen is None or seen[1] not in _FINISHED or seen[0] != row.inputs_hash:
            continue
        if row.row_id in unfinished or (failed is not None and row.row_id in failed):
            continue
        quiet[row.row_id] = seen[1]
    return quiet


def next_digest(
    stored: dict[str, StoredRow], quiet: dict[str, str], digest: Digest, touched: set[str]
) -> Digest:
    """What the next run may trust: the finished rows as this run read them (not those it
    changed or tried to), and the quiet rows as they were."""
    kept = {row_id: digest[row_id] for row_id in quiet}
    for row in stored.values():
        if row.status.value in _FINISHED and row.inputs_hash and row.row_id not in touched:
            kept[row.row_id] = (row.inputs_hash, row.status.value)
    return kept
