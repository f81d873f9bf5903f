"""Pure: which results go into which columns, and where each row is at the moment of writing
(the write-back's brain).

Results go into result columns beside the inputs, never into input cells: a result column is
one RESULT_COLUMNS names (or, left empty, one named after an output key), the status column,
the error column, or one an earlier run added. A row is found by its id in the id column as
read just before each write, never by a position remembered from an earlier read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.core.errors import ConfigError, SheetError
from shared.core.rows import column_letter
from shared.core.text import parse_arrows

# The Sheets API refuses a cell over 50,000 characters, counted as UTF-16 code units (an emoji
# outside the basic plane counts twice), as Sheets' own LEN() counts them.
MAX_CELL_CHARS = 50_000
# JSON numbers reach the API as doubles: integers past 2**53 would lose digits, so they are text.
MAX_EXACT_INT = 2**53


@dataclass(frozen=True)
class ResultColumns:
    """Output key -> header ((): every output key under its own name), and the headers of the
    status and error columns."""

    mapping: tuple[tuple[str, str], ...] = ()
    status_header: str = "dify_status"
    error_header: str = "dify_error"

    def declared(self) -> set[str]:
        """Headers that are result columns whatever the sheet holds."""
        return {h for _, h in self.mapping} | {self.status_header, self.error_header}


def parse_result_columns(text: str | None) -> tuple[tuple[str, str], ...]:
    """`answer->Answer, score->점수` -> (("answer", "Answer"), ("score", "점수"))."""
    pairs = parse_arrows(text)
    if isinstance(pairs, str):
        raise ConfigError(
            f"RESULT_COLUMNS has {pairs!r}, which is not output->Header; write it like "
            "answer->Answer, score->점수 (or leave it empty: one column per output)"
        )
    headers = [h for _, h in pairs]
    if len(set(headers)) != len(headers):
        raise ConfigError("RESULT_COLUMNS names one header twice; give each output its own")
    return tuple(pairs)


@dataclass(frozen=True)
class Finished:
    """A finished row whose outcome is not in the sheet yet."""

    row_id: str
    status: str
    outputs: dict[str, Any] | None
    error: str | None
    finished_at: datetime | None


@dataclass
class WritePlan:
    """What to write, by header name and row id; where is decided at the moment of writing."""

    headers: list[str] = field(default_factory=list)  # result headers used, in column order
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)  # row id -> header -> value
    input_columns_skipped: set[str] = field(default_factory=set)  # output keys = input headers
    error_header: str = "dify_error"  # where a row's write-back refusal is noted


def utf16_len(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _cut_utf16(text: str, units: int) -> str:
    """The longest prefix of `text` within `units` UTF-16 code units (never half a pair)."""
    used = 0
    for index, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > units:
            return text[:index]
    return text


def cell_text(value: Any) -> Any:
    """A value as one cell the Sheets API takes: text and finite numbers as they are, NaN,
    infinities and integers too large for a double as text, anything else as JSON; cut to the
    cell limit with a visible marker (the whole value stays in Datastore and `export`)."""
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan, inf, -inf: bare NaN/Infinity are not JSON, the API refuses them
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_EXACT_INT:
        value = str(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        value = json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, str) and utf16_len(value) > MAX_CELL_CHARS:
        marker = f" …[cut: {len(value):,} characters; the whole output is in `dify-batch export`]"
        return _cut_utf16(value, MAX_CELL_CHARS - utf16_len(marker)) + marker
    return value


def result_headers(columns: ResultColumns, known: Iterable[str]) -> set[str]:
    """Every header that holds results, not inputs."""
    return columns.declared() | set(known)


def columns_of_people(
    header: Sequence[str],
    *,
    columns: ResultColumns,
    known_result_headers: Collection[str],
    columns_with_data: Collection[int],
) -> list[str]:
    """Result headers already in the sheet that the project never wrote (not remembered as
    added by a write-back) and that hold data below the header: a person's own column."""
    return [
        name
        for index, name in enumerate(header)
        if name in columns.declared()
        and name not in known_result_headers
        and index in columns_with_data
    ]


def refuse_columns_of_people(names: Sequence[str], columns: ResultColumns) -> None:
    if names:
        quoted = ", ".join(repr(n) for n in names)
        raise SheetError(
            f"the sheet's column(s) {quoted} already hold data the write-back did not write, "
            "and the write-back would write results there (RESULT_COLUMNS, "
            f"RESULT_STATUS_COLUMN={columns.status_header!r}, "
            f"RESULT_ERROR_COLUMN={columns.error_header!r}); name other result headers, or "
            "rename or clear those columns. Nothing was run or written."
        )


def plan_write_back(
    header: Sequence[str],
    *,
    known_result_headers: Iterable[str],
    finished: Iterable[Finished],
    columns: ResultColumns,
) -> WritePlan:
    plan = WritePlan(error_header=columns.error_header)
    results = result_headers(columns, known_result_headers)
    inputs = {h for h in header if h not in results}

    def use(name: str) -> str:
        if name not in plan.headers:
            plan.headers.append(name)
        return name

    mapping = dict(columns.mapping)
    finished = list(finished)
    if finished:
        # Outputs first, then status and error, in a stable order.
        for name in mapping.values():
            if name not in inputs:
                use(name)
        use(columns.status_header)
        use(columns.error_header)
    for row in finished:
        cells: dict[str, Any] = {}
        outputs = row.outputs or {}
        targets = mapping.items() if mapping else ((k, k) for k in outputs)
        for key, name in targets:
            if name in inputs:
                plan.input_columns_skipped.add(key)
                continue
            cells[use(name)] = cell_text(outputs.get(key))
        cells[columns.status_header] = row.status
        cells[columns.error_header] = cell_text(row.error)
        plan.cells[row.row_id] = cells
    return plan


@dataclass
class Located:
    """Where each wanted id is in the id column as just read."""

    rows: dict[str, int] = field(default_factory=dict)  # id -> sheet row number
    missing: list[str] = field(default_factory=list)  # not in the sheet now
    ambiguous: list[str] = field(default_factory=list)  # in more than one row now


def locate(id_cells: Sequence[Any], wanted: Iterable[str]) -> Located:
    """`id_cells` is the id column from row 2 down (row 2 first). An id found in two rows is
    ambiguous: neither row is written."""
    seen: dict[str, list[int]] = {}
    for offset, cell in enumerate(id_cells):
        text = "" if cell is None else str(cell).strip()
        if text:
            seen.setdefault(text, []).append(offset + 2)
    located = Located()
    for row_id in wanted:
        numbers = seen.get(row_id, [])
        if len(numbers) == 1:
            located.rows[row_id] = numbers[0]
        elif numbers:
            located.ambiguous.append(row_id)
        else:
            located.missing.append(row_id)
    return located


def missing_headers(header: Sequence[str], wanted: Sequence[str]) -> list[str]:
    present = set(header)
    return [h for h in wanted if h not in present]


def column_span(first: int, count: int) -> str:
    """Columns as A1 letters: `F` or `F:H`."""
    first_letter, last_letter = column_letter(first), column_letter(first + count - 1)
    return first_letter if count == 1 else f"{first_letter}:{last_letter}"
