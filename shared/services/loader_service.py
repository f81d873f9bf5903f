"""load_sheet: read the sheet, diff it against Datastore, write entities, then enqueue tasks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from shared.adapters.logs import get_logger
from shared.adapters.store import PartialWrite, StatusStore, chunked, utcnow
from shared.adapters.tasks import EnqueueReport, TaskQueue
from shared.core.errors import SheetError, TransientError
from shared.core.form_check import Variable, check_row, missing_required, unknown_columns
from shared.core.model import NewRow, Status
from shared.core.planning import (
    Digest,
    Enqueue,
    LoadOptions,
    count_reasons,
    next_digest,
    plan,
    quiet_rows,
)
from shared.core.rows import InvalidRow, ParsedSheet, RowFilter, SheetRow, parse_rows
from shared.core.workflows import Routing, route
from shared.core.write_back import ResultColumns, plan_write_back, result_headers

if TYPE_CHECKING:
    from shared.adapters.queue_control import QueueControl
    from shared.adapters.sheet_writer import SheetWriter

log = get_logger("loader")
MAX_LISTED = 100  # ids listed per category in the answer; the counts are always complete
NEW_ROWS_PER_CHUNK = 2000  # new rows written, then enqueued while the next chunk is written


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
    input_check: dict[str, Any] = field(default_factory=dict)
    write_back: dict[str, Any] = field(default_factory=dict)
    finished_since_last_run: dict[str, Any] = field(default_factory=dict)
    # What this run asked of Datastore (entities_read, entities_written, queries): its cost.
    datastore: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WriteBack:
    """What writing results back into the sheet needs (WRITE_BACK=true)."""

    writer: SheetWriter
    columns: ResultColumns
    sheet_key: str  # spreadsheet id / tab: where the added result headers are remembered


class FormReader(Protocol):
    def form(self) -> list[Variable]: ...


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
        other_queues: dict[str, QueueControl] | None = None,
        write_back: WriteBack | None = None,
        input_forms: Mapping[str, FormReader] | None = None,
        routing: Routing | None = None,
        sheet_key: str = "",
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
        self._other_queues = other_queues or {}  # workflow -> its own queue (WORKFLOWS)
        self._write_back = write_back
        self._input_forms = input_forms or {}
        self._routing = routing
        self._sheet_key = sheet_key
        self._clock = clock
        self._timer = timer

    def load(self, options: LoadOptions) -> LoadReport:
        started = self._timer()
        run_started = self._clock()
        work_before = self._store.work.snapshot()
        queue_state = self._queue_state(options)
        header, body = self._sheet.read()
        rows_read = 0

        def counted() -> Iterator[tuple[int, list[Any]]]:
            nonlocal rows_read
            for item in body:
                rows_read += 1
                yield item

        result_columns = self._result_headers()
        route_column = self._routing.column if self._routing else None
        if self._routing is not None:
            self._routing.check_headers([str(h).strip() for h in header])
        sheet = parse_rows(
            header,
            counted(),
            id_column=self._id_column,
            row_filter=self._row_filter,
            result_columns=result_columns,
            route_column=route_column,
        )
        if self._routing is not None:
            sheet.rows, unrouted = route(sheet.rows, self._routing)
            sheet.invalid.extend(unrouted)
        report = LoadReport(dry_run=options.dry_run)
        if not options.write_back_only:
            self._plan_and_enqueue(sheet, header, result_columns, options, report)
        report.rows_read = rows_read
        report.filtered_out, report.blank_rows = sheet.filtered_out, sheet.blank
        report.invalid_count = len(sheet.invalid)
        report.invalid = [asdict(i) for i in sheet.invalid[:MAX_LISTED]]
        report.duplicate_count = len(sheet.duplicates)
        report.duplicate_ids = [asdict(d) for d in sheet.duplicates[:MAX_LISTED]]
        if self._write_back is not None and not options.dry_run:
            report.write_back = self._write_results([str(h).strip() for h in header], sheet)
            if report.write_back.get("error"):
                report.errors.append({"id": "(sheet)", "error": report.write_back["error"]})
                report.error_count += 1
        if not options.dry_run:
            report.finished_since_last_run = self._finished_since_last_run(run_started)
        report.queue = queue_state
        report.datastore = self._store.work.since(work_before)
        report.elapsed_s = round(self._timer() - started, 3)
        self._log(report)
        return report

    def _result_headers(self) -> set[str]:
        if self._write_back is None:
            return set()
        return result_headers(
            self._write_back.columns, self._store.result_headers(self._write_back.sheet_key)
        )

    def _check_inputs(
        self, sheet: ParsedSheet, header: list[Any], excluded: set[str], report: LoadReport
    ) -> tuple[list[SheetRow], dict[str, str]]:
        """Rows as they will be sent (file cells as file objects), and the reasons of rows the
        workflow's input form refuses. A required variable with no column stops the run here,
        before anything is written."""
        if not self._input_forms:
            return sheet.rows, {}
        filter_column = self._row_filter.column if self._row_filter else None
        route_column = self._routing.column if self._routing else None
        headers = [
            str(h).strip()
            for h in header
            if str(h).strip() not in excluded | {filter_column, route_column}
        ]
        forms: dict[str, list[Variable]] = {}
        unknown: set[str] = set()
        for name in sorted({r.workflow for r in sheet.rows}):
            reader = self._input_forms.get(name or "default")
            if reader is None:
                continue
            form = forms[name] = reader.form()  # once per workflow per run
            columns = self._routing.variables(name, headers) if self._routing else headers
            missing = missing_required(form, columns)
            if missing:
                owner = f"the workflow {name!r}" if len(self._input_forms) > 1 else "the workflow"
                raise SheetError(
                    f"{owner} requires {', '.join(repr(m) for m in missing)}, but the sheet has "
                    f"no column for it (its input columns: {', '.join(columns)}); add or rename "
                    "the column(s), or map them with INPUT_COLUMNS. Nothing was run or written."
                )
            unknown.update(unknown_columns(form, columns))
        report.input_check["unknown_columns"] = sorted(unknown)
        rows, refused = [], {}
        for row in sheet.rows:
            row_form = forms.get(row.workflow)
            if row_form is None:
                rows.append(row)
                continue
            sent, reason = check_row(row_form, row.inputs)
            if reason is None:
                rows.append(replace(row, inputs=sent))
            else:
                refused[row.row_id] = reason
                rows.append(row)
        report.input_check["refused"] = len(refused)
        return rows, refused

    def _plan_and_enqueue(
        self,
        sheet: ParsedSheet,
        header: list[Any],
        excluded: set[str],
        options: LoadOptions,
        report: LoadReport,
    ) -> None:
        checked, refused = self._check_inputs(sheet, header, excluded, report)
        digest = self._read_digest()
        quiet: dict[str, str] = {}
        if any(r.row_id in digest for r in checked):
            # A sheet at rest: rows the last run saw finished are not read again unless their
            # inputs changed or a keys-only query finds them unfinished (or FAILED, to retry).
            quiet = quiet_rows(
                [r for r in checked if r.row_id not in refused],
                digest,
                unfinished=self._store.unfinished_ids(),
                failed=self._store.failed_ids() if options.retry_failed else None,
            )
        stored, unreadable = self._store.get_many_checked(
            [r.row_id for r in checked if r.row_id not in quiet]
        )
        for row in checked:  # entities edited by hand into something unreadable
            if row.row_id in unreadable:
                sheet.invalid.append(InvalidRow(row.row_number, row.row_id, unreadable[row.row_id]))
        rows = [
            r
            for r in checked
            if r.row_id not in unreadable and r.row_id not in refused and r.row_id not in quiet
        ]
        # A refused row is recorded FAILED with its reason (no task), so it shows in the sheet
        # and in `status`; an existing one stays as it is until its cells are fixed.
        refused_new = [
            NewRow(
                r.row_id,
                dict(r.inputs),
                r.inputs_hash,
                r.row_number,
                error=refused[r.row_id],
                workflow=r.workflow,
            )
            for r in checked
            if r.row_id in refused and r.row_id not in stored and r.row_id not in unreadable
        ]
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
        actions.skipped.update(quiet.values())
        report.skipped = dict(actions.skipped)
        if options.dry_run:
            report.new = len(actions.new_rows)
            report.re_enqueued = actions.re_enqueued_by_reason()
            report.inputs_updated = len(actions.inputs_updated)
            return
        # Entities first, tasks second: a worker never gets a task for a row it cannot find,
        # and a run that dies in between loses nothing (the next run finds the lost tasks).
        # What was committed gets its tasks even when a later batch failed.
        # New rows go in chunks: a chunk's tasks are created (in the background) while the
        # next chunk is written, so the run takes about the longer of the two, not their sum.
        workflow_of = {r.row_id: r.workflow for r in actions.new_rows}
        created: list[str] = []
        applied: list[str] = []
        write_error: str | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="enqueue") as enqueuer:
            enqueues = []
            for chunk in chunked(actions.new_rows, NEW_ROWS_PER_CHUNK):
                done, write_error = _committed(self._store.insert_new, chunk)
                created.extend(done)
                items = [Enqueue(i, 0, "new", workflow_of.get(i, "")) for i in done]
                enqueues.append(enqueuer.submit(self._queue.enqueue, items))
                if write_error is not None:
                    break
            if write_error is None:
                applied, write_error = _committed(self._store.apply, actions.transitions)
            if write_error is None and refused_new:
                _, write_error = _committed(self._store.insert_new, refused_new)
            requeued = [actions.requeue[i] for i in applied if i in actions.requeue]
            enqueues.append(enqueuer.submit(self._queue.enqueue, requeued))
            enqueued = EnqueueReport()
            for future in enqueues:
                part = future.result()
                enqueued.created.extend(part.created)
                enqueued.existing.extend(part.existing)
                enqueued.errors.update(part.errors)
        if write_error is not None:
            # The scheduler's retry (or the next run) writes and enqueues the rest.
            enqueued.errors["(datastore)"] = write_error
        touched = set(actions.requeue) | {t.row_id for t in actions.transitions}
        self._write_digest(next_digest(stored, quiet, digest, touched), digest)
        report.new = len(created)
        report.re_enqueued = count_reasons(requeued)
        report.inputs_updated = len(set(applied) & set(actions.inputs_updated))
        report.tasks_created = len(enqueued.created)
        report.tasks_existing = len(enqueued.existing)
        report.error_count = len(enqueued.errors)
        report.errors = [{"id": i, "error": e} for i, e in enqueued.errors.items()][:MAX_LISTED]

    def _digest_key(self) -> str:
        return self._sheet_key or "sheet"

    def _read_digest(self) -> Digest:
        try:
            return self._store.read_digest(self._digest_key())
        except TransientError as exc:  # then every row is read, as without a digest
            log.warning("the loader's digest could not be read (%s)", exc.describe())
            return {}

    def _write_digest(self, rows: Digest, previous: Digest) -> None:
        try:
            self._store.write_digest(self._digest_key(), rows, previous)
        except TransientError as exc:  # the next run reads more rows; nothing else changes
            log.warning("the loader's digest could not be written (%s)", exc.describe())

    def _write_results(self, header: list[str], sheet: ParsedSheet) -> dict[str, Any]:
        """Write the outcome of every row that finished since the last write (found with an
        indexed query) beside its inputs; a row counts as written only once its write
        succeeded, so a failed write is retried next run and nothing is written twice."""
        assert self._write_back is not None
        pending = self._store.pending_writes()
        known = self._store.result_headers(self._write_back.sheet_key)
        write_plan = plan_write_back(
            header,
            known_result_headers=known,
            row_numbers={r.row_id: r.row_number for r in sheet.rows},
            finished=pending,
            columns=self._write_back.columns,
        )
        result = self._write_back.writer.write(write_plan, header_width=len(header))
        self._store.remember_result_headers(self._write_back.sheet_key, result.headers_added)
        done = set(result.written) | set(write_plan.not_in_sheet)
        self._store.mark_written([f for f in pending if f.row_id in done])
        return {
            "rows_written": len(result.written),
            "not_in_sheet": len(write_plan.not_in_sheet),
            "headers_added": result.headers_added,
            "output_keys_not_written": sorted(write_plan.input_columns_skipped),
            "left_for_next_run": len(pending) - len(done),
            "error": result.error,
        }

    def _finished_since_last_run(self, now: datetime) -> dict[str, Any]:
        since = self._store.last_run(self._sheet_key)
        self._store.note_run(self._sheet_key, now)
        if since is None:
            return {}
        rows = self._store.finished_since(since)
        return {
            "since": since.isoformat(),
            "rows": len(rows),
            "succeeded": sum(1 for r in rows if r["status"] == Status.SUCCESS),
            "failed": sum(1 for r in rows if r["status"] == Status.FAILED),
            "total_tokens": sum(int(r["total_tokens"] or 0) for r in rows),
            "workflow_seconds": round(sum(float(r["elapsed_time"] or 0) for r in rows), 3),
        }

    def _log(self, report: LoadReport) -> None:
        queue_state = report.queue
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

    def _queue_state(self, options: LoadOptions) -> dict[str, Any]:
        """The queue's state for the summary (with several workflows, `queues` holds each
        one's); paused queues are resumed first when asked (never in a dry run, which changes
        nothing). The loader never resumes a queue by itself."""
        state = self._one_queue_state(self._queue_control, options)
        if self._other_queues:
            state["queues"] = {
                name: self._one_queue_state(control, options)
                for name, control in self._other_queues.items()
            }
        return state

    def _one_queue_state(self, control: QueueControl, options: LoadOptions) -> dict[str, Any]:
        before = control.state()
        if not options.resume or not before.paused:
            return before.to_dict()
        if options.dry_run:
            return {**before.to_dict(), "would_resume": True}
        control.resume()
        log.info("resumed %s (was paused: %s)", before.queue, before.reason)
        return {**control.state().to_dict(), "resumed": True, "was": before.reason}


def _committed(
    write: Callable[[Sequence[Any]], list[str]], items: Sequence[Any]
) -> tuple[list[str], str | None]:
    """The ids a batched write committed, and the error that stopped it, if any."""
    try:
        return write(items), None
    except PartialWrite as partial:
        return partial.done, partial.error.describe()
