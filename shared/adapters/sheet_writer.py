"""SheetWriter: writes planned cells with `spreadsheets.values.batchUpdate` (Sheets API v4).

Model output is untrusted text: it is written RAW, so a value starting with `=` stays text and
never becomes a formula. Requests carry many ranges each and are paced under the API's
per-minute quotas; googleapiclient retries 429 and 5xx with exponential backoff.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from googleapiclient.errors import HttpError

from shared.adapters.sheet import quote_sheet_name
from shared.core.rows import column_letter
from shared.core.write_back import WritePlan

# A request stays well under the API's recommended 2 MB payload and its range count.
MAX_REQUEST_BYTES = 1_000_000
MAX_REQUEST_RANGES = 1_000
# 60 write requests per minute per user is the usual quota: one a second at most.
MIN_SECONDS_BETWEEN_REQUESTS = 1.0


@dataclass
class WriteResult:
    written: list[str] = field(default_factory=list)  # row ids whose cells were written
    headers_added: list[str] = field(default_factory=list)
    error: str | None = None  # why the rest was not written (retried next run)


class SheetWriter:
    def __init__(
        self,
        *,
        service: Any,
        spreadsheet_id: str,
        sheet_name: str,
        num_retries: int = 4,  # a write that still fails is retried by the next run
        min_interval_s: float = MIN_SECONDS_BETWEEN_REQUESTS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._values = service.spreadsheets().values()
        self._spreadsheet_id = spreadsheet_id
        self._tab = quote_sheet_name(sheet_name)
        self._num_retries = num_retries
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._sleep = sleep
        self._last_request = -1e9

    def _range(self, row: int, first_column: int, count: int) -> str:
        first = column_letter(first_column)
        last = column_letter(first_column + count - 1)
        return f"{self._tab}!{first}{row}:{last}{row}"

    def _row_ranges(self, row: int, cells: dict[int, Any]) -> list[dict[str, Any]]:
        """One range per run of adjacent columns."""
        ranges: list[dict[str, Any]] = []
        run: list[Any] = []
        start = previous = -2
        for index in sorted(cells):
            if index != previous + 1 and run:
                ranges.append({"range": self._range(row, start, len(run)), "values": [run]})
                run = []
            if not run:
                start = index
            run.append(cells[index])
            previous = index
        if run:
            ranges.append({"range": self._range(row, start, len(run)), "values": [run]})
        return ranges

    def write(self, plan: WritePlan, *, header_width: int) -> WriteResult:
        """Headers first, then rows in batches; a row counts as written only when the request
        holding it succeeded, and the first failure stops the rest (retried next run)."""
        result = WriteResult()
        batches: list[tuple[list[dict[str, Any]], list[str]]] = []
        data: list[dict[str, Any]] = []
        ids: list[str] = []
        size = 0
        if plan.new_headers:
            data.append(
                {
                    "range": self._range(1, header_width, len(plan.new_headers)),
                    "values": [plan.new_headers],
                }
            )
        for row_id, cells in plan.cells.items():
            ranges = self._row_ranges(plan.row_numbers[row_id], cells)
            weight = len(json.dumps(ranges, ensure_ascii=False).encode())
            if data and (
                size + weight > MAX_REQUEST_BYTES or len(data) + len(ranges) > MAX_REQUEST_RANGES
            ):
                batches.append((data, ids))
                data, ids, size = [], [], 0
            data.extend(ranges)
            ids.append(row_id)
            size += weight
        if data:
            batches.append((data, ids))
        for index, (batch, batch_ids) in enumerate(batches):
            error = self._send(batch)
            if error:
                result.error = error
                return result
            if index == 0:
                result.headers_added = list(plan.new_headers)
            result.written.extend(batch_ids)
        return result

    def _send(self, data: list[dict[str, Any]]) -> str | None:
        wait = self._last_request + self._min_interval_s - self._clock()
        if wait > 0:
            self._sleep(wait)
        self._last_request = self._clock()
        body = {"valueInputOption": "RAW", "data": data}
        try:
            self._values.batchUpdate(spreadsheetId=self._spreadsheet_id, body=body).execute(
                num_retries=self._num_retries
            )
        except HttpError as exc:
            status = int(exc.resp.status)
            hint = (
                " (share the sheet with the loader's service account as Editor)"
                if status
                in (
                    401,
                    403,
                )
                else ""
            )
            return f"Sheets API answered {status} writing results{hint}"
        return None
