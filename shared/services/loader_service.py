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
from shared.core.errors import BatchError, SheetError, TransientError
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
from shared.core.spend import SPEND_CODE, SpendLimits, limit_reached
from shared.core.workflows import Routing, route
from shared.core.write_back import (
    ResultColumns,
    columns_of_people,
    plan_write_back,
    refuse_columns_of_people,
    result_headers,
)

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
    spend: dict[str, Any] = field(default_factory=dict)  # with a spend limit: tokens so far
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
        spend_limits: SpendLimits | None = None,
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
        self._spend_limits = spend_limits or SpendLimits()
        self._clock = clock
        self._timer = timer

    def load(self, options: LoadOptions) -> LoadReport:
        started = self._timer()
        run_started = self._clock()
        work_before = self._store.work.snapshot()
        queue_state = self._queue_state(options)
        if options.pause:  # the operator's pause: nothing else
            report = LoadReport(dry_run=options.dry_run, queue=queue_state)
            report.elapsed_s = round(self._timer() - started, 3)
            self._log(report)
            return report
        header, body = self._sheet.read()
        rows_read = 0
        known = self._known_result_headers()
        watched = self._watched_columns(header, known)
        with_data: set[int] = set()

        def counted() -> Iterator[tuple[int, list[Any]]]:
            nonlocal rows_read
            for item in body:
                rows_read += 1
                for index in watched:
                    cells = item[1]
                    if index < len(cells) and str(cells[index]).strip():
                        with_data.add(index)
                yield item

        result_columns = self._result_headers(known)
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
        if self._write_back is not None:
            # A person's own column under a result header: refused before anything runs.
            refuse_columns_of_people(
                columns_of_people(
                    [str(h).strip() for h in header],
                    columns=self._write_back.columns,
                    known_result_headers=known,
                    columns_with_data=with_data,
                ),
                self._write_back.columns,
            )
        if self._routing is not None:
            sheet.rows, unrouted = route(sheet.rows, self._routing)
            sheet.invalid.extend(unrouted)
        not_run = _not_run(sheet)  # before planning adds rows whose entity is unreadable
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
            report.write_back = self._write_results([str(h).strip() for h in header], known)
            if report.write_back.get("error"):
                report.errors.append({"id": "(sheet)", "error": report.write_back["error"]})
                report.error_count += 1
        if not options.dry_run:
            report.finished_since_last_run = self._finished_since_last_run(run_started)
            try:  # so `export` holds every sheet row; the run's work is done either way
                self._store.record_not_run(not_run)
            except BatchError as exc:
                log.warning("the list of rows not run was not recorded: %s", exc.describe())
        report.queue = queue_state
        if self._spend_limits.active:
            report.spend = {
                "tokens_so_far": sum(self._store.spend_totals().values()),
                "max_total_tokens": self._spend_limits.total,
                **(
                    {"workflow_limits": dict(self._spend_limits.workflows)}
                    if self._spend_limits.workflows
                    else {}
                ),
            }
        report.datastore = self._store.work.since(work_before)
        report.elapsed_s = round(self._timer() - started, 3)
        self._log(report)
        return report

    def _known_result_headers(self) -> list[str]:
        """Result headers an earlier write-back wrote under (so its own, not a person's)."""
        if self._write_back is None:
            return []
        return self._store.result_headers(self._write_back.sheet_key)

    def _watched_columns(self, header: list[Any], known: list[str]) -> list[int]:
        """Columns under a declared result header the project never wrote: the read notes
        whether they hold data (a person's column)."""
        if self._write_back is None:
            return []
        declared = self._write_back.columns.declared()
        return [
            i
            for i, h in enumerate(header)
            if str(h).strip() in declared and str(h).strip() not in known
        ]

    def _result_headers(self, known: list[str]) -> set[str]:
        if self._write_back is None:
            return set()
        return result_headers(self._write_back.columns, known)

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

    def _write_results(self, header: list[str], known: list[str]) -> dict[str, Any]:
        """Write the outcome of every row that finished since the last write (found with an
        indexed query, a page at a time) into the row that holds its id at the moment of
        writing. A row counts as written only once its write succeeded and its id was still
        there; every other row stays pending and is tried again next run, so nothing is lost
        and nothing is written twice."""
        assert self._write_back is not None
        writer, columns = self._write_back.writer, self._write_back.columns
        summary: dict[str, Any] = {
            "rows_written": 0,
            "headers_added": [],
            "output_keys_not_written": set(),
            "not_in_sheet": 0,
            "ids_in_several_rows": 0,
            "moved_while_writing": 0,
            "refused_count": 0,
            "refused": [],
            "left_for_next_run": 0,
            "error": None,
        }
        for pending in self._store.pending_write_pages():
            write_plan = plan_write_back(
                header, known_result_headers=known, finished=pending, columns=columns
            )
            result = writer.write(write_plan, header=header)
            used = [h for h in [*result.headers_added, *result.headers_used] if h not in known]
            if used:  # headers it wrote under are its own from now on, never a person's
                self._store.remember_result_headers(self._write_back.sheet_key, used)
                known = [*known, *dict.fromkeys(used)]
            header = [*header, *(h for h in result.headers_added if h not in header)]
            written = set(result.written)
            self._store.mark_written([f for f in pending if f.row_id in written])
            # Rows that may now show a moved row's cells get their own written again.
            self._store.write_again([i for i in result.displaced if i not in result.moved])
            summary["rows_written"] += len(written)
            summary["headers_added"] += result.headers_added
            summary["output_keys_not_written"] |= write_plan.input_columns_skipped
            summary["not_in_sheet"] += len(result.not_in_sheet)
            summary["ids_in_several_rows"] += len(result.ambiguous)
            summary["moved_while_writing"] += len(result.moved)
            summary["refused_count"] += len(result.refused)
            summary["refused"] += [{"id": i, "error": e} for i, e in result.refused.items()]
            summary["left_for_next_run"] += len(pending) - len(written)
            if result.error:
                summary["error"] = result.error  # later pages are not read: next run
                break
        summary["output_keys_not_written"] = sorted(summary["output_keys_not_written"])
        summary["refused"] = summary["refused"][:MAX_LISTED]
        return summary

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
        own = set(self._other_queues)
        default_served = [
            name
            for name in (self._routing.workflows if self._routing else ["default"])
            if name not in own
        ]
        state = self._one_queue_state(self._queue_control, options, default_served)
        if self._other_queues:
            state["queues"] = {
                name: self._one_queue_state(control, options, [name])
                for name, control in self._other_queues.items()
            }
        return state

    def _one_queue_state(
        self, control: QueueControl, options: LoadOptions, workflows: list[str]
    ) -> dict[str, Any]:
        before = control.state()
        if options.pause:
            if before.paused or options.dry_run:
                return {**before.to_dict(), **({"would_pause": True} if not before.paused else {})}
            control.pause(
                code="operator", reason="paused by an operator (dify-batch pause)", row_id=""
            )
            log.warning("paused %s at an operator's request", before.queue)
            return {**control.state().to_dict(), "paused": True}
        if not options.resume or not before.paused:
            return before.to_dict()
        if before.code == SPEND_CODE:
            # Resumed only once the limit allows it: else the next row would pause it again.
            default = self._routing.default if self._routing else None
            still = limit_reached(
                self._store.spend_totals(),
                self._spend_limits,
                workflows=workflows,
                default=default or "default",
            )
            if still:
                return {
                    **before.to_dict(),
                    "resumed": False,
                    "resume_refused": f"{still}; raise MAX_TOTAL_TOKENS (or the workflow's "
                    "max_total_tokens) and redeploy, then resume",
                }
        if options.dry_run:
            return {**before.to_dict(), "would_resume": True}
        control.resume()
        log.info("resumed %s (was paused: %s)", before.queue, before.reason)
        return {**control.state().to_dict(), "resumed": True, "was": before.reason}


def _not_run(sheet: ParsedSheet) -> list[dict[str, Any]]:
    invalid = [
        {"row_number": i.row_number, "row_id": i.row_id, "status": "INVALID", "reason": i.reason}
        for i in sheet.invalid
    ]
    repeated = [
        {
            "row_number": d.row_number,
            "row_id": d.row_id,
            "status": "DUPLICATE_ID",
            "reason": f"its id is also on row {d.first_row_number}; only that row runs",
        }
        for d in sheet.duplicates
    ]
    return sorted(invalid + repeated, key=lambda r: int(r["row_number"]))


def _committed(
    write: Callable[[Sequence[Any]], list[str]], items: Sequence[Any]
) -> tuple[list[str], str | None]:
    """The ids a batched write committed, and the error that stopped it, if any."""
    try:
        return write(items), None
    except PartialWrite as partial:
        return partial.done, partial.error.describe()
