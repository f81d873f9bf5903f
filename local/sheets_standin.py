"""A local STAND-IN of the Google Sheets API v4 (tests and demos only, never deployed).

Serves `spreadsheets.get` (tab titles, ids and grid size), `spreadsheets.batchUpdate`
(appendDimension only), `values.get` and `values.batchGet` (rows or columns; trailing empty
cells and rows omitted) and `values.batchUpdate` the way the real API answers them, so the real
google-api-python-client runs against it when SHEETS_API_ENDPOINT points here. Like the real
API, a write is all or nothing and is refused (400) for: a body that is not strict JSON (bare
NaN or Infinity), a cell over 50,000 characters (UTF-16 code units, as Sheets counts), a range
past the grid's rows or columns, a protected cell.

    python -m local.sheets_standin --port 8091 --csv local/sample_sheet.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

Grid = list[list[str]]
SAMPLE_CSV = Path(__file__).with_name("sample_sheet.csv")
# Rows (2:10), columns (C:C, F:H, C2:C), or a block (A2:C9).
_A1_AREA = re.compile(r"^([A-Z]*)(\d*)(?::([A-Z]*)(\d*))?$")


def _column_index(letters: str) -> int:
    index = 0
    for ch in letters:
        index = index * 26 + (ord(ch) - 64)
    return index - 1


def _split_range(a1: str) -> tuple[str, str]:
    """ "'My ''tab'''!2:10" -> ("My 'tab'", "2:10")."""
    if a1.startswith("'"):
        end = a1.index("'!", 1) if "'!" in a1 else len(a1)
        return a1[1:end].replace("''", "'"), a1[end + 2 :]
    name, _, cells = a1.partition("!")
    return name, cells


_A1_CELL = re.compile(r"^([A-Z]+)(\d+)(?::[A-Z]+\d+)?$")
MAX_CELL_CHARS = 50_000
PROTECTED = (
    "You are trying to edit a protected cell or object. Please contact the spreadsheet owner "
    "to remove protection if you need to edit."
)


def _utf16_len(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"bare {name} is not JSON")


def _area(a1: str) -> tuple[int, int, int | None, int | None] | None:
    """A1 area -> (first row, first column, last row, last column), 1-based rows and 0-based
    columns; None for an open end."""
    match = _A1_AREA.match(a1)
    if not match or not a1:
        return None
    c1, r1, c2, r2 = match.groups()
    if match.group(3) is None and match.group(4) is None:
        c2, r2 = c1, r1
    first_row = int(r1) if r1 else 1
    first_col = _column_index(c1) if c1 else 0
    last_row = int(r2) if r2 else None
    last_col = _column_index(c2) if c2 else None
    return first_row, first_col, last_row, last_col


def _trim(rows: Grid) -> Grid:
    out = []
    for row in rows:
        cells = list(row)
        while cells and cells[-1] == "":
            cells.pop()
        out.append(cells)
    while out and not out[-1]:
        out.pop()
    return out


@dataclass
class SheetsStandIn:
    """`spreadsheets`: spreadsheet id -> tab title -> rows (the header first)."""

    spreadsheets: dict[str, dict[str, Grid]] = field(default_factory=dict)
    # Real sheets keep empty rows below the data; the grid is this much taller than the data.
    spare_rows: int = 100
    requests: list[str] = field(default_factory=list)
    faults: deque[int] = field(default_factory=deque)  # HTTP statuses to answer next
    updates: list[dict[str, Any]] = field(default_factory=list)  # values:batchUpdate bodies
    write_faults: deque[int] = field(default_factory=deque)  # statuses for the next writes
    # (tab, first row, last row, first column, last column), 1-based rows, 0-based columns.
    protected: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    column_count: dict[str, int] = field(default_factory=dict)  # tab -> grid columns (else 26+)
    # Called with the spreadsheet just before a values.batchUpdate is applied: a person editing
    # the sheet between the writer's read and its write.
    before_write: Any = None
    # Called with each request's path before it is served (tests: a person's edit at an exact
    # moment, e.g. on the writer's first `values:batchGet`).
    on_request: Any = None
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> SheetsStandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.reply(*stand_in.answer(self.path))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    request = json.loads(
                        self.rfile.read(length) or b"{}", parse_constant=_refuse_constant
                    )
                except ValueError:
                    self.reply(
                        *stand_in._error(400, "Invalid JSON payload received. Unexpected token.")
                    )
                    return
                if urlsplit(self.path).path.endswith(":batchUpdate") and "/values" not in (
                    self.path
                ):
                    self.reply(*stand_in.sheet_update(self.path, request))
                    return
                self.reply(*stand_in.batch_update(self.path, request))

            def reply(self, status: int, body: dict[str, Any]) -> None:
                # A lone surrogate in a cell goes out as a JSON escape, as the real API sends it.
                text = json.dumps(body, ensure_ascii=False)
                payload = text.encode("utf-8", "backslashreplace")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def batch_update(self, raw_path: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """`values:batchUpdate`: writes each range's values into the grid, as the API does.
        Records every request (also refused ones) in `updates`."""
        path = unquote(urlsplit(raw_path).path)
        if self.on_request is not None:
            self.on_request(path)
        with self._lock:
            self.requests.append(path)
            self.updates.append(request)
            if self.write_faults:
                return self._error(self.write_faults.popleft(), "injected fault")
        parts = path.split("/")  # '', 'v4', 'spreadsheets', 'id', 'values:batchUpdate'
        if len(parts) != 5 or parts[4] != "values:batchUpdate":
            return self._error(404, "unknown path")
        book = self.spreadsheets.get(parts[3])
        if book is None:
            return self._error(404, "Requested entity was not found.")
        if request.get("valueInputOption") not in ("RAW", "USER_ENTERED"):
            return self._error(400, "Invalid valueInputOption")
        with self._lock:
            if self.before_write is not None:
                self.before_write(book)
            writes: list[tuple[Grid, int, int, Any]] = []
            for item in request.get("data", []):
                title, a1 = _split_range(str(item.get("range", "")))
                match = _A1_CELL.match(a1)
                if title not in book or not match:
                    return self._error(400, f"Unable to parse range: {item.get('range')}")
                column, row = _column_index(match.group(1)), int(match.group(2))
                grid = book[title]
                for r_offset, values in enumerate(item.get("values", [])):
                    for c_offset, value in enumerate(values):
                        at_row, at_col = row + r_offset, column + c_offset
                        if at_row > self._row_count(grid) or at_col >= self._columns(title, grid):
                            return self._error(
                                400,
                                f"Range ({title}!{item.get('range', '').split('!')[-1]}) "
                                f"exceeds grid limits. Max rows: {self._row_count(grid)}, "
                                f"max columns: {self._columns(title, grid)}",
                            )
                        if isinstance(value, str) and _utf16_len(value) > MAX_CELL_CHARS:
                            return self._error(
                                400,
                                f"Your input contains more than the maximum of "
                                f"{MAX_CELL_CHARS} characters in a single cell.",
                            )
                        if any(
                            t == title and r1 <= at_row <= r2 and c1 <= at_col <= c2
                            for t, r1, r2, c1, c2 in self.protected
                        ):
                            return self._error(400, PROTECTED)
                        writes.append((grid, at_row, at_col, value))
            for grid, at_row, at_col, value in writes:  # all or nothing, as the API does
                while len(grid) < at_row:
                    grid.append([])
                target = grid[at_row - 1]
                while len(target) <= at_col:
                    target.append("")
                target[at_col] = value
            cells = len(writes)
        return 200, {"spreadsheetId": parts[3], "totalUpdatedCells": cells}

    def _row_count(self, grid: Grid) -> int:
        return len(grid) + self.spare_rows

    def _columns(self, title: str, grid: Grid) -> int:
        return self.column_count.get(title, max([26, *(len(r) for r in grid)]))

    def sheet_update(self, raw_path: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """`spreadsheets.batchUpdate`: only appendDimension (COLUMNS) is served."""
        path = unquote(urlsplit(raw_path).path)
        with self._lock:
            self.requests.append(path)
            book_id = path.split("/")[3].split(":")[0]
            book = self.spreadsheets.get(book_id)
            if book is None:
                return self._error(404, "Requested entity was not found.")
            titles = list(book)
            for item in request.get("requests", []):
                append = item.get("appendDimension")
                if not append or append.get("dimension") != "COLUMNS":
                    return self._error(400, "the stand-in serves appendDimension COLUMNS only")
                sheet_id = int(append.get("sheetId", 0))
                if not 0 <= sheet_id < len(titles):
                    return self._error(400, f"No grid with id: {sheet_id}")
                title = titles[sheet_id]
                self.column_count[title] = self._columns(title, book[title]) + int(
                    append.get("length", 0)
                )
        return 200, {"spreadsheetId": book_id, "replies": [{}]}

    def value_requests(self) -> list[str]:
        with self._lock:
            return [r for r in self.requests if "/values/" in r]

    @staticmethod
    def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
        names = {
            400: "INVALID_ARGUMENT",
            404: "NOT_FOUND",
            429: "RESOURCE_EXHAUSTED",
            500: "INTERNAL",
            503: "UNAVAILABLE",
        }
        return status, {
            "error": {"code": status, "message": message, "status": names.get(status, "UNKNOWN")}
        }

    def answer(self, raw_path: str) -> tuple[int, dict[str, Any]]:
        path = urlsplit(raw_path).path
        if self.on_request is not None:
            self.on_request(unquote(path))
        with self._lock:
            self.requests.append(unquote(path))
            if self.faults:
                return self._error(self.faults.popleft(), "injected fault")
        parts = path.split("/")  # '', 'v4', 'spreadsheets', id, ['values', range]
        if len(parts) < 4 or parts[1:3] != ["v4", "spreadsheets"]:
            return self._error(404, "unknown path")
        query = parse_qs(urlsplit(raw_path).query)
        major = (query.get("majorDimension") or ["ROWS"])[0]
        if len(parts) == 5 and parts[4] == "values:batchGet":
            book = self.spreadsheets.get(unquote(parts[3]))
            if book is None:
                return self._error(404, "Requested entity was not found.")
            ranges = []
            for a1 in query.get("ranges", []):
                status, body = self._values(book, a1, major)
                if status != 200:
                    return status, body
                ranges.append(body)
            return 200, {"spreadsheetId": parts[3], "valueRanges": ranges}
        book = self.spreadsheets.get(unquote(parts[3]))
        if book is None:
            return self._error(404, "Requested entity was not found.")
        if len(parts) == 4:
            return 200, {
                "sheets": [
                    {
                        "properties": {
                            "sheetId": index,
                            "title": title,
                            "gridProperties": {
                                "rowCount": self._row_count(rows),
                                "columnCount": self._columns(title, rows),
                            },
                        }
                    }
                    for index, (title, rows) in enumerate(book.items())
                ]
            }
        if len(parts) != 6 or parts[4] != "values":
            return self._error(404, "unknown path")
        with self._lock:
            return self._values(book, unquote(parts[5]), major)

    def _values(self, book: dict[str, Grid], a1: str, major: str) -> tuple[int, dict[str, Any]]:
        title, cells = _split_range(a1)
        if title not in book:
            return self._error(400, f"Unable to parse range: {a1}")
        area = _area(cells)
        if area is None:
            return self._error(400, f"Unable to parse range: {a1}")
        first_row, first_col, last_row, last_col = area
        rows = book[title]
        if (last_row or 0) > self._row_count(rows) or (last_col or 0) >= self._columns(title, rows):
            return self._error(400, f"Range ({a1}) exceeds grid limits.")
        picked = [
            [
                str(c) if not isinstance(c, str) else c
                for c in row[first_col : (None if last_col is None else last_col + 1)]
            ]
            for row in rows[first_row - 1 : last_row]
        ]
        if major == "COLUMNS":
            width = max([0, *(len(r) for r in picked)])
            picked = [[r[i] if i < len(r) else "" for r in picked] for i in range(width)]
        values = _trim(picked)
        body: dict[str, Any] = {"range": a1, "majorDimension": major}
        if values:
            body["values"] = values
        return 200, body


def read_csv(path: Path) -> Grid:
    with path.open(encoding="utf-8", newline="") as f:
        return [list(row) for row in csv.reader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description="Local stand-in of the Google Sheets API v4")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--csv", type=Path, default=SAMPLE_CSV)
    parser.add_argument("--spreadsheet-id", default="sample")
    parser.add_argument("--sheet-name", default="Sheet1")
    args = parser.parse_args()
    stand_in = SheetsStandIn({args.spreadsheet_id: {args.sheet_name: read_csv(args.csv)}})
    stand_in.start(port=args.port)
    print(
        f"Sheets stand-in: SHEETS_API_ENDPOINT={stand_in.endpoint} serving {args.csv} as "
        f"SPREADSHEET_ID={args.spreadsheet_id} SHEET_NAME={args.sheet_name}",
        flush=True,
    )
    threading.Event().wait()


if __name__ == "__main__":
    main()
