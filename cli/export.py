"""Rows as CSV or JSONL, written as they are read (one page of rows in memory at a time)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
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


def _json_object(text: Any) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def record(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as plain, JSON-ready data."""
    finished = row.get("finished_at")
    return {
        "id": row.get("id"),
        "row_number": row.get("row_number"),
        "status": row.get("status"),
        "inputs": _json_object(row.get("inputs")),
        "outputs": _json_object(row.get("result")),
        "error": row.get("error"),
        "attempts": row.get("attempts"),
        "total_tokens": row.get("total_tokens"),
        "elapsed_time": row.get("elapsed_time"),
        "finished_at": finished.isoformat() if isinstance(finished, datetime) else finished,
        "workflow_run_id": row.get("workflow_run_id"),
        "workflow": row.get("workflow"),
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def write_jsonl(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    count = 0
    for row in rows:
        out.write(json.dumps(record(row), ensure_ascii=False) + "\n")
        count += 1
    return count


def write_csv(
    rows: Iterable[dict[str, Any]], out: IO[str], *, sheet_columns: Sequence[str] = ()
) -> int:
    """CSV with the standard fields; with `sheet_columns`, the inputs are spread into those
    columns first (the sheet's own header), as the demo's results file shows them."""
    writer = csv.writer(out, lineterminator="\n")
    if sheet_columns:
        header = [*sheet_columns, "status", "outputs", "error", "attempts", "tokens", "time_s"]
    else:
        header = list(FIELDS)
    writer.writerow(header)
    count = 0
    for row in rows:
        item = record(row)
        if sheet_columns:
            inputs = item["inputs"] if isinstance(item["inputs"], dict) else {}
            values = [inputs.get(c, "") for c in sheet_columns]
            values += [
                item["status"],
                item["outputs"],
                item["error"],
                item["attempts"],
                item["total_tokens"],
                item["elapsed_time"],
            ]
        else:
            values = [item[f] for f in FIELDS]
        writer.writerow([_cell(v) for v in values])
        count += 1
    return count
