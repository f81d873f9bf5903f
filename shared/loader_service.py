"""load_sheet: read the sheet, diff it against Datastore, write entities, then enqueue tasks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from shared.logs import get_logger
from shared.model import Status
from shared.planning import Enqueue, LoadOptions, count_reasons, plan
from shared.rows import InvalidRow, RowFilter, parse_rows
from shared.store import PartialWrite, StatusStore, utcnow
from shared.tasks import TaskQueue

if TYPE_CHECKING:
    from shared.queue_control import QueueControl

log = get_logger("loader")
MAX_LISTED = 100  # ids listed per category in the answer; the counts are always complete


class Sheet(Protocol):
    def read(self) -> tuple[list[Any], Iterator[tuple[int, list[Any]]]]: ...


@dataclass
class LoadReport:
    dry_run: bool
    rows_read: int = 0
    new: int = 0
    re_enqueued: dict[str, int] = field(default_factory=dict)
    inputs_updated: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    filtered_out: int = 0
    blank_rows: int = 0
    invalid_count: int = 0
    invalid: list[dict[str, Any]] = field(default_factory=list)
    duplicate_count: int = 0
    duplicate_ids: list[dict[str, Any]] = field(default_factory=list)
    tasks_created: int = 0
    tasks_existing: int = 0
    error_count: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    queue: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LoaderService:
    def __init__(
        self,
        *,
        sheet: Sheet,
        store: StatusStore,
        queue: TaskQueue,
        id_column: str,
        row_filter: RowFilter | None,
        namespace: str | None,
        queue_control: QueueControl,
        clock: Callable[[], datetime] = utcnow,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sheet = sheet
        self._store = store
        self._queue = queue
        self._id_column = id_column
        self._row_filter = row_filter
        self._namespace = namespace
        self._queue_control = queue_control
        self._clock = clock
        self._timer = timer

    def load(self, options: LoadOptions) -> LoadReport:
        started = self._timer()
        queue_state = self._queue_state(options)
        header, body = self._sheet.read()
        rows_read = 0

        def counted() -> Iterator[tuple[int, list[Any]]]:
            nonlocal rows_read
            for item in body:
                rows_read += 1
                yield item

        sheet = parse_rows(
            header, counted(), id_column=self._id_column, row_filter=self._row_filter
        )
        stored, unreadable = self._store.get_many_checked([r.row_id for r in sheet.rows])
        for row in sheet.rows:  # entities edited by hand into something unreadable
            if row.row_id in unreadable:
                sheet.invalid.append(InvalidRow(row.row_number, row.row_id, unreadable[row.row_id]))
        rows = [r for r in sheet.rows if r.row_id not in unreadable]
        pending = any(s.status is Status.PENDING for s in stored.values())
        actions = plan(
            rows,
            stored,
            now=self._clock(),
            options=options,
            live_task_ids=self._queue.live_task_ids() if pending else None,
            namespace=self._namespace,
            expired_claims=self._store.expired_claims(),
        )
        report = LoadReport(
            dry_run=options.dry_run,
            rows_read=rows_read,
            skipped=dict(actions.skipped),
            filtered_out=sheet.filtered_out,
            blank_rows=sheet.blank,
            invalid_count=len(sheet.invalid),
            invalid=[asdict(i) for i in sheet.invalid[:MAX_LISTED]],
            duplicate_count=len(sheet.duplicates),
            duplicate_ids=[asdict(d) for d in sheet.duplicates[:MAX_LISTED]],
        )
        if options.dry_run:
            report.new = len(actions.new_rows)
            report.re_enqueued = actions.re_enqueued_by_reason()
            report.inputs_updated = len(actions.inputs_updated)
        else:
            # Entities first, tasks second: a worker never gets a task for a row it cannot find,
            # and a run that dies in between loses nothing (the next run finds the lost tasks).
            # What was committed gets its tasks even when a later batch failed.
            created, write_error = _committed(self._store.insert_new, actions.new_rows)
            applied: list[str] = []
            if write_error is None:
                applied, write_error = _committed(self._store.apply, actions.transitions)
            requeued = [actions.requeue[i] for i in applied if i in actions.requeue]
            items = [Enqueue(row_id, 0, "new") for row_id in created] + requeued
            enqueued = self._queue.enqueue(items)
            if write_error is not None:
                # The scheduler's retry (or the next run) writes and enqueues the rest.
                enqueued.errors["(datastore)"] = write_error
            report.new = len(created)
            report.re_enqueued = count_reasons(requeued)
            report.inputs_updated = len(set(applied) & set(actions.inputs_updated))
            report.tasks_created = len(enqueued.created)
            report.tasks_existing = len(enqueued.existing)
            report.error_count = len(enqueued.errors)
            report.errors = [{"id": i, "error": e} for i, e in enqueued.errors.items()][:MAX_LISTED]
        report.queue = queue_state
        report.elapsed_s = round(self._timer() - started, 3)
        if queue_state.get("state") == "PAUSED":
            log.error(
                "the queue %s is paused: %s. Fix the cause, then run the loader with resume=true",
                queue_state["queue"],
                queue_state.get("paused_reason"),
                extra={"event": "queue_paused", **queue_state},
            )
        log.log(
            logging.ERROR if report.errors else logging.INFO,
            "loader run: %d rows read, %d new, %d tasks created",
            report.rows_read,
            report.new,
            report.tasks_created,
            extra={
                "event": "load_summary",
                **{
                    k: v
                    for k, v in report.to_dict().items()
                    if k not in ("invalid", "duplicate_ids")
                },
            },
        )
        return report

    def _queue_state(self, options: LoadOptions) -> dict[str, Any]:
        """The queue's state for the summary; resumed first when asked (never in a dry run,
        which changes nothing). The loader never resumes a queue by itself."""
        before = self._queue_control.state()
        if not options.resume or not before.paused:
            return before.to_dict()
        if options.dry_run:
            return {**before.to_dict(), "would_resume": True}
        self._queue_control.resume()
        log.info("resumed %s (was paused: %s)", before.queue, before.reason)
        return {**self._queue_control.state().to_dict(), "resumed": True, "was": before.reason}


def _committed(
    write: Callable[[Sequence[Any]], list[str]], items: Sequence[Any]
) -> tuple[list[str], str | None]:
    """The ids a batched write committed, and the error that stopped it, if any."""
    try:
        return write(items), None
    except PartialWrite as partial:
        return partial.done, partial.error.describe()
