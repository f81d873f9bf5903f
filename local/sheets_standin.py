"""A local STAND-IN of the Google Sheets API v4 (tests and demos only, never deployed).

Serves `spreadsheets.get` (tab titles and grid size) and `spreadsheets.values.get` the way
the real API answers them (trailing empty cells and rows omitted), so the real
google-api-python-client runs against it when SHEETS_API_ENDPOINT points here.

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
from urllib.parse import unquote, urlsplit

Grid = list[list[str]]
SAMPLE_CSV = Path(__file__).with_name("sample_sheet.csv")
_A1_ROWS = re.compile(r"^(?:[A-Z]*)(\d+):(?:[A-Z]*)(\d+)$")


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
                    request = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self.reply(*stand_in._error(400, "Invalid JSON payload received."))
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
            cells = 0
            for item in request.get("data", []):
                title, a1 = _split_range(str(item.get("range", "")))
                match = _A1_CELL.match(a1)
                if title not in book or not match:
                    return self._error(400, f"Unable to parse range: {item.get('range')}")
                column, row = _column_index(match.group(1)), int(match.group(2))
                grid = book[title]
                for r_offset, values in enumerate(item.get("values", [])):
                    while len(grid) < row + r_offset:
                        grid.append([])
                    target = grid[row + r_offset - 1]
                    for c_offset, value in enumerate(values):
                        if len(str(value)) > MAX_CELL_CHARS:
                            return self._error(
                                400,
                                f"Your input contains more than the maximum of "
                                f"{MAX_CELL_CHARS} characters in a single cell.",
                            )
                        while len(target) <= column + c_offset:
                            target.append("")
                        target[column + c_offset] = value
                        cells += 1
        return 200, {"spreadsheetId": parts[3], "totalUpdatedCells": cells}

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
        with self._lock:
            self.requests.append(unquote(path))
            if self.faults:
                return self._error(self.faults.popleft(), "injected fault")
        parts = path.split("/")  # '', 'v4', 'spreadsheets', id, ['values', range]
        if len(parts) < 4 or parts[1:3] != ["v4", "spreadsheets"]:
            return self._error(404, "unknown path")
        book = self.spreadsheets.get(unquote(parts[3]))
        if book is None:
            return self._error(404, "Requested entity was not found.")
        if len(parts) == 4:
            return 200, {
                "sheets": [
                    {
                        "properties": {
                            "title": title,
                            "gridProperties": {
                                "rowCount": len(rows) + self.spare_rows,
                                "columnCount": max([26, *(len(r) for r in rows)]),
                            },
                        }
                    }
                    for title, rows in book.items()
                ]
            }
        if len(parts) != 6 or parts[4] != "values":
            return self._error(404, "unknown path")
        a1 = unquote(parts[5])
        title, cells = _split_range(a1)
        if title not in book:
            return self._error(400, f"Unable to parse range: {a1}")
        match = _A1_ROWS.match(cells)
        if not match:
            return self._error(400, f"Unable to parse range: {a1} (the stand-in reads rows)")
        first, last = int(match.group(1)), int(match.group(2))
        rows = book[title]
        if last > len(rows) + self.spare_rows:
            return self._error(400, f"Range ({a1}) exceeds grid limits.")
        values = _trim(rows[first - 1 : last])
        body: dict[str, Any] = {"range": a1, "majorDimension": "ROWS"}
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
