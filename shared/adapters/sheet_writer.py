"""SheetWriter: writes results into the rows that hold their ids at the moment of writing
(Sheets API v4: `values.batchGet`, `values.batchUpdate`).

Why re-read the id column before every write, rather than anchor rows with developer
metadata: metadata would need one anchor per row, created at a position that can itself be
stale (so checked against the ids anyway), one more write per new row, and metadata storage
per spreadsheet is limited (Google's guide gives a cap in characters, not checked here against
the live API). Reading one column is one cheap request per batch, and the same read tells
which ids are missing or repeated right now. The read is followed by the write within one
round trip, and confirmed by a second read: a row whose id is no longer where it was written
is not counted as written, so it is written again, in its new place, by the next run.

Model output is untrusted text: it is written RAW, so a value starting with `=` stays text and
never becomes a formula. Requests are paced under the API's per-minute quotas (reads and
writes counted apart); googleapiclient retries 429 and 5xx with exponential backoff. A request
the API refuses (400: a protected cell, a value it will not take) is split until the rows it
refuses are isolated; every other row is written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from googleapiclient.errors import HttpError

from shared.adapters.sheet import quote_sheet_name
from shared.core.errors import SheetError
from shared.core.rows import column_letter, resolve_id_column
from shared.core.write_back import WritePlan, cell_text, column_span, locate, missing_headers

# A request stays well under the API's recommended 2 MB payload and its range count.
MAX_REQUEST_BYTES = 1_000_000
MAX_REQUEST_ROWS = 1_000  # result columns sit side by side: about one range a row
# The usual quotas are 60 reads and 60 writes a minute per user: a burst of a few, then one a
# second on average, each kind apart.
REQUESTS_PER_SECOND = 1.0
BURST = 8
# Isolating refused rows costs about 2·log2(rows) requests per refused row; past this many in
# one call, the refusal is taken as one that concerns the whole sheet (a renamed tab, say).
ISOLATION_REQUESTS = 64


class Pacer:
    """A token bucket: at most `burst` requests at once, `rate` a second on average."""

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self._rate, self._burst = rate, float(burst)
        self._tokens, self._clock, self._sleep = float(burst), clock, sleep
        self._at = clock()

    def wait(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            self._sleep((1 - self._tokens) / self._rate)
            self._tokens, self._at = 1.0, self._clock()
        self._tokens -= 1


@dataclass
class WriteResult:
    written: list[str] = field(default_factory=list)  # row ids whose cells were written
    headers_added: list[str] = field(default_factory=list)
    headers_used: list[str] = field(default_factory=list)  # result headers now in the sheet
    not_in_sheet: list[str] = field(default_factory=list)  # id in no row now: kept pending
    ambiguous: list[str] = field(default_factory=list)  # id in several rows now: kept pending
    moved: list[str] = field(default_factory=list)  # the sheet moved during the write: again
    displaced: list[str] = field(default_factory=list)  # ids now where a moved row was written
    refused: dict[str, str] = field(default_factory=dict)  # row id -> why the API refused it
    error: str | None = None  # why the rest was not written (retried next run)


@dataclass(frozen=True)
class _Refusal:
    status: int
    message: str

    @property
    def local(self) -> bool:
        """400 concerns something inside the request (a cell, a range): worth isolating.
        401/403/404 and 5xx after the retries concern the whole sheet."""
        return self.status == 400


class SheetWriter:
    def __init__(
        self,
        *,
        service: Any,
        spreadsheet_id: str,
        sheet_name: str,
        id_column: str,
        num_retries: int = 4,  # a write that still fails is retried by the next run
        rate: float = REQUESTS_PER_SECOND,
        burst: int = BURST,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._spreadsheets = service.spreadsheets()
        self._values = self._spreadsheets.values()
        self._spreadsheet_id = spreadsheet_id
        self._sheet_name = sheet_name
        self._tab = quote_sheet_name(sheet_name)
        self._id_column = id_column
        self._num_retries = num_retries
        self._reads = Pacer(rate=rate, burst=burst, clock=clock, sleep=sleep)
        self._writes = Pacer(rate=rate, burst=burst, clock=clock, sleep=sleep)
        self._id_letter = "A"
        self._isolation_left = ISOLATION_REQUESTS

    # -- requests -----------------------------------------------------------------------------

    def _execute(self, request: Any, pacer: Pacer) -> Any:
        pacer.wait()
        try:
            return request.execute(num_retries=self._num_retries)
        except HttpError as exc:
            raise _Failed(_Refusal(int(exc.resp.status), _message(exc))) from None

    def _send(self, data: list[dict[str, Any]]) -> _Refusal | None:
        body = {"valueInputOption": "RAW", "data": data}
        try:
            self._execute(
                self._values.batchUpdate(spreadsheetId=self._spreadsheet_id, body=body),
                self._writes,
            )
        except _Failed as failed:
            return failed.refusal
        return None

    def _read_ids(self) -> tuple[list[str], list[Any]]:
        """The header and the id column (row 2 down), read together just before a write."""
        for _ in range(2):
            answer = self._execute(
                self._values.batchGet(
                    spreadsheetId=self._spreadsheet_id,
                    ranges=[
                        f"{self._tab}!1:1",
                        f"{self._tab}!{self._id_letter}2:{self._id_letter}",
                    ],
                    majorDimension="COLUMNS",
                ),
                self._reads,
            )
            ranges = answer.get("valueRanges", [{}, {}])
            header = [str(c[0]).strip() if c else "" for c in ranges[0].get("values", [])]
            column = ranges[1].get("values", [[]])
            letter = column_letter(self._id_index(header))
            if letter == self._id_letter:
                return header, (column[0] if column else [])
            self._id_letter = letter  # a column was inserted or removed left of the ids
        raise SheetError("the sheet's columns kept moving while results were written")

    def _id_index(self, header: Sequence[str]) -> int:
        index = resolve_id_column(self._id_column, header)
        if index is None:
            raise SheetError(
                "write-back needs ids that stay with their row; UNIQUE_ID_COLUMN=ROW_NUMBER "
                "changes when rows are inserted, deleted or sorted"
            )
        return index

    # -- headers ------------------------------------------------------------------------------

    def _add_headers(self, header: Sequence[str], missing: list[str]) -> str | None:
        """Append `missing` right of the header, into columns that hold nothing at all (the
        grid is widened first when it is too narrow). None, or why not."""
        first = len(header)
        span = column_span(first, len(missing))
        tab = self._tab_properties()
        columns = int(tab.get("gridProperties", {}).get("columnCount", 0))
        existing = min(columns, first + len(missing)) - first  # target columns the grid has
        if existing > 0:
            below = self._execute(
                self._values.get(
                    spreadsheetId=self._spreadsheet_id,
                    range=f"{self._tab}!{column_span(first, existing)}",
                    majorDimension="COLUMNS",
                ),
                self._reads,
            ).get("values", [])
            for offset, cells in enumerate(below):
                if any(str(c).strip() for c in cells):
                    letter = column_letter(first + offset)
                    return (
                        f"column {letter} holds data but has no header, and the write-back "
                        f"would put its result header(s) {', '.join(map(repr, missing))} there "
                        f"({span}): give that column a header or clear it. No results were "
                        "written; they wait for the next run"
                    )
        if first + len(missing) > columns:
            self._execute(
                self._spreadsheets.batchUpdate(
                    spreadsheetId=self._spreadsheet_id,
                    body={
                        "requests": [
                            {
                                "appendDimension": {
                                    "sheetId": tab.get("sheetId", 0),
                                    "dimension": "COLUMNS",
                                    "length": first + len(missing) - columns,
                                }
                            }
                        ]
                    },
                ),
                self._writes,
            )
        refusal = self._send(
            [{"range": f"{self._tab}!{column_letter(first)}1", "values": [list(missing)]}]
        )
        return _describe(refusal, "adding the result headers") if refusal else None

    def _tab_properties(self) -> dict[str, Any]:
        meta = self._execute(
            self._spreadsheets.get(
                spreadsheetId=self._spreadsheet_id,
                fields="sheets.properties(sheetId,title,gridProperties(rowCount,columnCount))",
            ),
            self._reads,
        )
        for sheet in meta.get("sheets", []):
            props: dict[str, Any] = sheet.get("properties", {})
            if props.get("title") == self._sheet_name:
                return props
        raise SheetError(f"the spreadsheet has no tab named {self._sheet_name!r} (SHEET_NAME)")

    # -- rows ---------------------------------------------------------------------------------

    def write(self, plan: WritePlan, *, header: Sequence[str]) -> WriteResult:
        """Headers first, then rows in batches. Each batch re-reads the ids, writes each row
        where its id is now, and checks the ids again; a row counts as written only then.
        `header` is the header as the caller last read it; headers missing from it are looked
        for in a fresh read before any is added."""
        result = WriteResult()
        if not plan.cells:
            return result
        self._isolation_left = ISOLATION_REQUESTS
        try:
            missing = missing_headers(header, plan.headers)
            if missing:
                header, _ = self._read_ids()
                missing = missing_headers(header, plan.headers)
            if missing:
                result.error = self._add_headers(header, missing)
                if result.error:
                    return result
                result.headers_added = missing
            result.headers_used = list(plan.headers)
            for batch in self._batches(plan):
                self._write_batch(plan, batch, result)
                if result.error:
                    return result
        except _Failed as failed:
            result.error = _describe(failed.refusal, "writing results")
        except SheetError as exc:
            result.error = f"{exc.message}; results wait for the next run"
        return result

    def _batches(self, plan: WritePlan) -> list[list[str]]:
        batches: list[list[str]] = [[]]
        size = 0
        for row_id, cells in plan.cells.items():
            weight = len(json.dumps(cells, ensure_ascii=False, default=str).encode()) + 64
            if batches[-1] and (
                size + weight > MAX_REQUEST_BYTES or len(batches[-1]) >= MAX_REQUEST_ROWS
            ):
                batches.append([])
                size = 0
            batches[-1].append(row_id)
            size += weight
        return batches

    def _write_batch(self, plan: WritePlan, ids: list[str], result: WriteResult) -> None:
        header, id_cells = self._read_ids()
        positions = {name: index for index, name in enumerate(header)}
        gone = [h for h in plan.headers if h not in positions]
        if gone:
            result.error = (
                f"the result column(s) {', '.join(map(repr, gone))} left the header while "
                "results were written; results wait for the next run"
            )
            return
        located = locate(id_cells, ids)
        result.not_in_sheet.extend(located.missing)
        result.ambiguous.extend(located.ambiguous)
        groups = [
            (row_id, self._row_ranges(number, plan.cells[row_id], positions))
            for row_id, number in located.rows.items()
        ]
        sent, error = self._send_isolating(groups, located.rows, positions, plan, result)
        if error:
            result.error = error
        if not sent:
            return
        after_header, after_ids = self._read_ids()
        for row_id in sent:
            number = located.rows[row_id]
            now = after_ids[number - 2] if number - 2 < len(after_ids) else ""
            if str(now).strip() == row_id and after_header[: len(header)] == header:
                result.written.append(row_id)
            else:
                result.moved.append(row_id)
                if str(now).strip():
                    result.displaced.append(str(now).strip())

    def _send_isolating(
        self,
        groups: list[tuple[str, list[dict[str, Any]]]],
        rows: dict[str, int],
        positions: dict[str, int],
        plan: WritePlan,
        result: WriteResult,
    ) -> tuple[list[str], str | None]:
        """Send the groups (one per row); a refusal that concerns the request's content is
        split in halves until each refused row stands alone. (sent ids, a fatal error)."""
        if not groups:
            return [], None
        refusal = self._send([r for _, ranges in groups for r in ranges])
        if refusal is None:
            return [g[0] for g in groups], None
        if not refusal.local or self._isolation_left <= 0:
            return [], _describe(refusal, "writing results")
        self._isolation_left -= 1
        if len(groups) == 1:
            row_id = groups[0][0]
            reason = f"the Sheets API refused this row's result: {refusal.message}"
            result.refused[row_id] = reason
            self._note_refusal(rows[row_id], reason, positions, plan)
            return [], None
        middle = len(groups) // 2
        sent: list[str] = []
        for half in (groups[:middle], groups[middle:]):
            done, error = self._send_isolating(half, rows, positions, plan, result)
            sent += done
            if error:
                return sent, error
        return sent, None

    def _note_refusal(
        self, row: int, reason: str, positions: dict[str, int], plan: WritePlan
    ) -> None:
        """Where the API takes it, the reason goes into the row's error column: a person sees
        why the row's result is missing."""
        self._send(self._row_ranges(row, {plan.error_header: cell_text(reason)}, positions))

    def _row_ranges(
        self, row: int, cells: dict[str, Any], positions: dict[str, int]
    ) -> list[dict[str, Any]]:
        """One range per run of adjacent columns."""
        by_index = {positions[name]: value for name, value in cells.items()}
        ranges: list[dict[str, Any]] = []
        run: list[Any] = []
        start = previous = -2
        for index in sorted(by_index):
            if index != previous + 1 and run:
                ranges.append(self._range(row, start, run))
                run = []
            if not run:
                start = index
            run.append(by_index[index])
            previous = index
        if run:
            ranges.append(self._range(row, start, run))
        return ranges

    def _range(self, row: int, first: int, values: list[Any]) -> dict[str, Any]:
        last = column_letter(first + len(values) - 1)
        return {"range": f"{self._tab}!{column_letter(first)}{row}:{last}{row}", "values": [values]}


class _Failed(Exception):
    def __init__(self, refusal: _Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def _message(exc: HttpError) -> str:
    try:
        return str(json.loads(exc.content)["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return str(getattr(exc, "reason", "") or exc)[:300]


def _describe(refusal: _Refusal, what: str) -> str:
    hint = (
        " (share the sheet with the loader's service account as Editor)"
        if refusal.status in (401, 403)
        else ""
    )
    return f"Sheets API answered {refusal.status} {what}: {refusal.message}{hint}"
