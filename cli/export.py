"""Rows as CSV or JSONL, written as they are read (one page of rows in memory at a time).

The files are opened by people in Excel or Google Sheets, so by default a CSV:
- neutralises cells that a spreadsheet would run as a formula (OWASP "CSV injection"): a cell
  starting with `=`, `+`, `-`, `@`, tab or carriage return gets a leading `'`, which both
  programs show as text (plain numbers such as `-3.5` are left as they are);
- starts with a UTF-8 byte order mark, without which Excel reads Korean as mojibake.
`raw=True` and `bom=False` turn either off. Values stored by hand in odd types (bytes, NaN, a
number where text belongs) are written as text, never a crash.
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import IO, Any

# The fields of every exported row, in order; `inputs` and `outputs` are JSON objects.
FIELDS = (
    "id",
    "row_number",
    "status",
    "inputs",
    "outputs",
    "error",
    "attempts",
    "total_tokens",
    "elapsed_time",
    "finished_at",
    "workflow_run_id",
    "workflow",
)
BOM = "\ufeff"
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def plain(value: Any) -> Any:
    """A stored value as JSON-ready data: bytes as text, NaN and infinities as text, dates as
    ISO text, anything unknown as its text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _json_object(text: Any) -> Any:
    text = plain(text)
    if not text:
        return None
    if not isinstance(text, str):
        return text
    try:
        return plain(json.loads(text))
    except ValueError:
        return text


def record(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as plain, JSON-ready data."""
    return {
        "id": plain(row.get("id")),
        "row_number": plain(row.get("row_number")),
        "status": plain(row.get("status")),
        "inputs": _json_object(row.get("inputs")),
        "outputs": _json_object(row.get("result")),
        "error": plain(row.get("error")),
        "attempts": plain(row.get("attempts")),
        "total_tokens": plain(row.get("total_tokens")),
        "elapsed_time": plain(row.get("elapsed_time")),
        "finished_at": plain(row.get("finished_at")),
        "workflow_run_id": plain(row.get("workflow_run_id")),
        "workflow": plain(row.get("workflow")),
    }


def safe_cell(text: str) -> str:
    """`text` as a spreadsheet shows it as text: formula-leading cells get a leading `'`."""
    if text.startswith(FORMULA_LEADS) and not _PLAIN_NUMBER.match(text):
        return "'" + text
    return text


def cell(value: Any, *, raw: bool = False) -> str:
    value = plain(value)
    if value is None:
        text = ""
    elif isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    return text if raw else safe_cell(text)


def with_rows_not_run(
    stored: Iterable[dict[str, Any]], not_run: Iterable[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """Stored rows and the rows the loader did not store (invalid, repeated ids), merged in
    sheet-row order; both come ordered by row number."""

    def row_number(row: dict[str, Any]) -> float:
        number = row.get("row_number")
        return float(number) if isinstance(number, int | float) else math.inf

    return heapq.merge(stored, not_run, key=row_number)


def write_jsonl(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    count = 0
    for row in rows:
        out.write(json.dumps(record(row), ensure_ascii=False) + "\n")
        count += 1
    return count


def csv_writer(out: IO[str], *, bom: bool = True) -> Any:
    if bom:
        out.write(BOM)
    return csv.writer(out, lineterminator="\n")


def write_csv(
    rows: Iterable[dict[str, Any]], out: IO[str], *, raw: bool = False, bom: bool = True
) -> int:
    """The standard fields of every stored row."""
    writer = csv_writer(out, bom=bom)
    writer.writerow(FIELDS)
    count = 0
    for row in rows:
        item = record(row)
        writer.writerow([cell(item[f], raw=raw) for f in FIELDS])
        count += 1
    return count


def write_sheet_csv(
    grid: Sequence[Sequence[Any]],
    stored: Iterable[dict[str, Any]],
    summary: dict[str, Any],
    out: IO[str],
    *,
    raw: bool = False,
    bom: bool = True,
) -> int:
    """Every row of the sheet (`grid`, header first) in sheet order, with its cells as the
    sheet holds them and its outcome: the stored row's status, or why it did not run (invalid,
    a repeated id, blank, not selected), from the loader's `summary`."""
    header = [str(h) for h in grid[0]] if grid else []
    by_row = {r.get("row_number"): record(r) for r in stored}
    invalid = {i.get("row_number"): i for i in summary.get("invalid") or []}
    repeated = {d.get("row_number"): d for d in summary.get("duplicate_ids") or []}
    writer = csv_writer(out, bom=bom)
    writer.writerow(
        [cell(h, raw=raw) for h in ["row", *header, "status", "outputs", "error", "attempts"]]
        + ["tokens", "time_s"]
    )
    count = 0
    for number, cells in enumerate(grid[1:], start=2):
        padded = [*cells, *[""] * (len(header) - len(cells))]
        item = by_row.get(number)
        if item is not None:
            outcome = [item["status"], item["outputs"], item["error"], item["attempts"]]
            outcome += [item["total_tokens"], item["elapsed_time"]]
        elif number in invalid:
            outcome = ["INVALID", None, invalid[number].get("reason"), None, None, None]
        elif number in repeated:
            first = repeated[number].get("first_row_number")
            reason = f"its id is also on row {first}; only that row runs"
            outcome = ["DUPLICATE_ID", None, reason, None, None, None]
        elif not any(str(c).strip() for c in cells):
            outcome = ["BLANK", None, "an empty row", None, None, None]
        else:
            reason = "not run: left out by ROW_FILTER_COLUMN, or see the loader's summary"
            outcome = ["NOT_RUN", None, reason, None, None, None]
        writer.writerow([cell(v, raw=raw) for v in [number, *padded, *outcome]])
        count += 1
    return count
