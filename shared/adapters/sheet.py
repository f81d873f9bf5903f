"""SheetReader: the header and the rows of one tab, read in chunks (Sheets API v4)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from googleapiclient.errors import HttpError

from shared.core.errors import SheetError, TransientError


def quote_sheet_name(name: str) -> str:
    """A1 notation: quote the tab name, doubling inner apostrophes ('Bob''s sheet')."""
    return "'" + name.replace("'", "''") + "'"


class SheetReader:
    def __init__(
        self,
        *,
        service: Any,  # a googleapiclient `sheets` v4 resource
        spreadsheet_id: str,
        sheet_name: str,
        chunk_rows: int,
        num_retries: int = 6,
    ) -> None:
        self._spreadsheets = service.spreadsheets()
        self._spreadsheet_id = spreadsheet_id
        self._sheet_name = sheet_name
        self._chunk_rows = chunk_rows
        # googleapiclient retries 429 and 5xx with exponential backoff by itself.
        self._num_retries = num_retries

    def _execute(self, request: Any, what: str) -> Any:
        try:
            return request.execute(num_retries=self._num_retries)
        except HttpError as exc:
            status = int(exc.resp.status)
            reason = exc.reason if hasattr(exc, "reason") else str(exc)
            if status == 429 or status >= 500:
                raise TransientError(
                    f"Sheets API answered {status} reading {what}: {reason}", code="sheets"
                ) from None
            hint = {
                403: "share the sheet with the loader's service account (Viewer is enough), or "
                "check the credentials",
                404: "check SPREADSHEET_ID (the id in the sheet's URL)",
            }.get(status, "check SPREADSHEET_ID and SHEET_NAME")
            raise SheetError(
                f"Sheets API answered {status} reading {what}: {reason}; {hint}"
            ) from None

    def row_count(self) -> int:
        meta = self._execute(
            self._spreadsheets.get(
                spreadsheetId=self._spreadsheet_id,
                fields="sheets.properties(title,gridProperties(rowCount,columnCount))",
            ),
            "the spreadsheet's tabs",
        )
        titles = []
        for sheet in meta.get("sheets", []):
            props = sheet.get("properties", {})
            titles.append(props.get("title"))
            if props.get("title") == self._sheet_name:
                return int(props.get("gridProperties", {}).get("rowCount", 0))
        raise SheetError(
            f"the spreadsheet has no tab named {self._sheet_name!r} (SHEET_NAME); its tabs are: "
            + ", ".join(repr(t) for t in titles)
        )

    def _values(self, first: int, last: int) -> list[list[Any]]:
        a1 = f"{quote_sheet_name(self._sheet_name)}!{first}:{last}"
        answer = self._execute(
            self._spreadsheets.values().get(
                spreadsheetId=self._spreadsheet_id, range=a1, majorDimension="ROWS"
            ),
            f"rows {first}-{last}",
        )
        values = answer.get("values", [])
        return values if isinstance(values, list) else []

    def read(self) -> tuple[list[Any], Iterator[tuple[int, list[Any]]]]:
        """(header cells, iterator of (sheet row number, cells)). Whole rows (every column) are
        read, `chunk_rows` at a time, so no answer grows with the sheet."""
        rows = self.row_count()
        header_rows = self._values(1, 1)
        header = header_rows[0] if header_rows else []

        def body() -> Iterator[tuple[int, list[Any]]]:
            for first in range(2, rows + 1, self._chunk_rows):
                last = min(rows, first + self._chunk_rows - 1)
                for offset, cells in enumerate(self._values(first, last)):
                    yield first + offset, cells

        return header, body()
