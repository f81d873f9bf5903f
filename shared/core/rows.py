"""Pure: turn the sheet's cells into rows with ids and workflow inputs.

The header row names the workflow's input variables. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.core.errors import SheetError
from shared.core.text import has_lone_surrogate

ROW_NUMBER = "ROW_NUMBER"
MAX_ID_BYTES = 1500  # Datastore key names are limited to 1,500 bytes
# A row's inputs must leave room in its ~1 MiB entity for the workflow's result.
MAX_INPUTS_BYTES = 512 * 1024
_RESERVED_ID = re.compile(r"^__.*__$")  # Datastore reserves key names like __foo__


@dataclass(frozen=True)
class SheetRow:
    row_number: int  # the sheet's own row number (the header is row 1)
    row_id: str
    inputs: dict[str, Any]
    inputs_hash: str
    route: str = ""  # the WORKFLOW_COLUMN cell, when there is one
    workflow: str = ""  # the workflow it runs on, once routed


@dataclass(frozen=True)
class InvalidRow:
    row_number: int
    row_id: str
    reason: str


@dataclass(frozen=True)
class DuplicateRow:
    row_id: str
    row_number: int
    first_row_number: int


@dataclass
class ParsedSheet:
    rows: list[SheetRow] = field(default_factory=list)
    invalid: list[InvalidRow] = field(default_factory=list)
    duplicates: list[DuplicateRow] = field(default_factory=list)
    blank: int = 0
    filtered_out: int = 0


@dataclass(frozen=True)
class RowFilter:
    column: str
    value: str


def inputs_hash(inputs: dict[str, Any]) -> str:
    canonical = json.dumps(inputs, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_header(cells: Sequence[Any]) -> list[str]:
    """Trimmed header names; blank or repeated names are a SheetError saying which column."""
    if not cells:
        raise SheetError(
            "the sheet's first row is empty: it must hold the workflow's input variable names"
        )
    names = [str(c).strip() for c in cells]
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        letter = column_letter(index)
        if has_lone_surrogate(name):
            raise SheetError(
                f"header cell {letter}1 holds a broken character (half of an emoji or another "
                "character outside the basic plane); retype that header"
            )
        if not name:
            raise SheetError(
                f"header cell {letter}1 is blank: every column needs a name (the workflow's "
                "input variable); name it or delete the column"
            )
        if name in seen:
            raise SheetError(
                f"header {name!r} appears twice ({column_letter(seen[name])}1 and {letter}1): "
                "header names must be unique"
            )
        seen[name] = index
    return names


def column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def resolve_id_column(spec: str, header: Sequence[str]) -> int | None:
    """UNIQUE_ID_COLUMN -> a column index, or None for ROW_NUMBER."""
    spec = spec.strip()
    if spec.upper() == ROW_NUMBER:
        return None
    if spec.isdigit():
        index = int(spec)
        if index >= len(header):
            raise SheetError(
                f"UNIQUE_ID_COLUMN is {spec} (0-based), but the header has only "
                f"{len(header)} columns: {', '.join(header)}"
            )
        return index
    if spec in header:
        return header.index(spec)
    raise SheetError(
        f"UNIQUE_ID_COLUMN {spec!r} is not a header of the sheet; use a 0-based column index, "
        f"{ROW_NUMBER}, or one of: {', '.join(header)}"
    )


def _id_problem(row_id: str) -> str | None:
    if not row_id:
        return "the id cell is empty"
    if has_lone_surrogate(row_id):
        return "the id holds a broken character (half of an emoji?); retype it"
    if len(row_id.encode()) > MAX_ID_BYTES:
        return f"the id is longer than {MAX_ID_BYTES} bytes"
    if _RESERVED_ID.match(row_id):
        return "ids of the form __name__ are reserved by Datastore"
    return None


def _inputs_problem(inputs: dict[str, str]) -> str | None:
    for name, cell in inputs.items():
        if has_lone_surrogate(cell):
            return (
                f"the cell under {name!r} holds a broken character (half of an emoji?); retype it"
            )
    size = sum(len(c.encode()) + len(n.encode()) for n, c in inputs.items())
    if size > MAX_INPUTS_BYTES:
        return (
            f"its cells hold {size:,} bytes of text, more than the {MAX_INPUTS_BYTES:,} a row may "
            "have (its status entity holds about 1 MiB with the result); shorten them"
        )
    return None


def parse_rows(
    header_cells: Sequence[Any],
    rows: Iterable[tuple[int, Sequence[Any]]],
    *,
    id_column: str,
    row_filter: RowFilter | None = None,
    result_columns: Collection[str] = (),
    route_column: str | None = None,
) -> ParsedSheet:
    """`rows` are (sheet row number, cells) after the header. Blank rows are skipped, short
    rows padded with empty strings; of rows sharing an id the first wins. `result_columns`
    (written by the write-back) are neither inputs nor part of the inputs' hash."""
    header = parse_header(header_cells)
    id_index = resolve_id_column(id_column, header)
    filter_index: int | None = None
    if row_filter is not None:
        if row_filter.column not in header:
            raise SheetError(
                f"ROW_FILTER_COLUMN {row_filter.column!r} is not a header of the sheet; "
                f"headers: {', '.join(header)}"
            )
        filter_index = header.index(row_filter.column)
    parsed = ParsedSheet()
    first_seen: dict[str, int] = {}
    for row_number, raw in rows:
        cells = ["" if c is None else str(c) for c in raw]
        if not any(c.strip() for c in cells):
            parsed.blank += 1
            continue
        if filter_index is not None and row_filter is not None:
            cell = cells[filter_index] if filter_index < len(cells) else ""
            if cell.strip().casefold() != row_filter.value.strip().casefold():
                parsed.filtered_out += 1
                continue
        row_id = (
            str(row_number)
            if id_index is None
            else (cells[id_index].strip() if id_index < len(cells) else "")
        )
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header) :]):
            parsed.invalid.append(
                InvalidRow(
                    row_number,
                    row_id,
                    f"has values right of the last header column "
                    f"({column_letter(len(header) - 1)}); give that column a header",
                )
            )
            continue
        problem = _id_problem(row_id)
        if problem:
            parsed.invalid.append(InvalidRow(row_number, row_id, problem))
            continue
        if row_id in first_seen:
            parsed.duplicates.append(DuplicateRow(row_id, row_number, first_seen[row_id]))
            continue
        cells += [""] * (len(header) - len(cells))
        inputs = {
            name: cells[i]
            for i, name in enumerate(header)
            if i != filter_index and name not in result_columns and name != route_column
        }
        route = cells[header.index(route_column)] if route_column in header else ""
        problem = _inputs_problem(inputs)
        if problem:
            parsed.invalid.append(InvalidRow(row_number, row_id, problem))
            continue
        first_seen[row_id] = row_number
        parsed.rows.append(SheetRow(row_number, row_id, inputs, inputs_hash(inputs), route))
    return parsed
