"""Pure: which cells of the sheet get which results (the write-back's brain).

Results go into result columns beside the inputs, never into input cells: a result column is
one RESULT_COLUMNS names (or, left empty, one named after an output key), the status column,
the error column, or one an earlier run added. Rows are found by id in the sheet as the
same run read it, so rows inserted, deleted or sorted meanwhile still get their own results.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.core.errors import ConfigError
from shared.core.text import parse_arrows

MAX_CELL_CHARS = 50_000  # the Sheets API refuses longer cells


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
    new_headers: list[str] = field(default_factory=list)  # appended right of the header
    cells: dict[str, dict[int, Any]] = field(default_factory=dict)  # row id -> column -> value
    row_numbers: dict[str, int] = field(default_factory=dict)
    not_in_sheet: list[str] = field(default_factory=list)  # nothing to write; done with them
    input_columns_skipped: set[str] = field(default_factory=set)  # output keys = input headers


def cell_text(value: Any) -> Any:
    """A value as one cell: text and numbers as they are, anything else as JSON; cut to the
    cell limit with a visible marker (the whole value stays in Datastore and `export`)."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
        marker = f" …[cut: {len(value):,} characters; the whole output is in `dify-batch export`]"
        return value[: MAX_CELL_CHARS - len(marker)] + marker
    return value


def result_headers(columns: ResultColumns, known: Iterable[str]) -> set[str]:
    """Every header that holds results, not inputs."""
    return columns.declared() | set(known)


def plan_write_back(
    header: Sequence[str],
    *,
    known_result_headers: Iterable[str],
    row_numbers: dict[str, int],
    finished: Iterable[Finished],
    columns: ResultColumns,
) -> WritePlan:
    plan = WritePlan()
    results = result_headers(columns, known_result_headers)
    inputs = {h for h in header if h not in results}
    positions = {h: i for i, h in enumerate(header)}

    def column(name: str) -> int:
        if name not in positions:
            positions[name] = len(header) + len(plan.new_headers)
            plan.new_headers.append(name)
        return positions[name]

    mapping = dict(columns.mapping)
    finished = list(finished)
    if finished:
        # Outputs first, then status and error, in a stable order.
        for name in mapping.values():
            if name not in inputs:
                column(name)
        column(columns.status_header)
        column(columns.error_header)
    for row in finished:
        number = row_numbers.get(row.row_id)
        if number is None:
            plan.not_in_sheet.append(row.row_id)
            continue
        cells: dict[int, Any] = {}
        outputs = row.outputs or {}
        targets = mapping.items() if mapping else ((k, k) for k in outputs)
        for key, name in targets:
            if name in inputs:
                plan.input_columns_skipped.add(key)
                continue
            cells[column(name)] = cell_text(outputs.get(key))
        cells[column(columns.status_header)] = row.status
        cells[column(columns.error_header)] = cell_text(row.error)
        plan.cells[row.row_id] = cells
        plan.row_numbers[row.row_id] = number
    return plan
