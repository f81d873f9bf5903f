"""The Sheets stand-in refuses what the real Sheets API refuses (what the write-back relies
on), through the real google-api-python-client: a body with bare NaN, a cell over 50,000
UTF-16 code units, a range past the grid, a protected cell; a refused write changes nothing."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from local.sheets_standin import SheetsStandIn


@pytest.fixture
def api() -> Iterator[tuple[SheetsStandIn, object]]:
    server = SheetsStandIn({"book": {"Tab": [["id", "q"], ["a", "x"]]}}, spare_rows=2).start()
    service = build(
        "sheets",
        "v4",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": server.endpoint},
        static_discovery=True,
    )
    yield server, service.spreadsheets()
    server.stop()


def write(sheets, *data):
    body = {"valueInputOption": "RAW", "data": [{"range": r, "values": [v]} for r, v in data]}
    return sheets.values().batchUpdate(spreadsheetId="book", body=body).execute()


def refusal(sheets, *data) -> str:
    with pytest.raises(HttpError) as caught:
        write(sheets, *data)
    assert caught.value.resp.status == 400
    return str(caught.value)


def test_what_the_api_refuses_is_refused_whole(api):
    server, sheets = api
    assert "Invalid JSON payload" in refusal(sheets, ("'Tab'!C2", [math.nan]))
    assert "maximum of 50000 characters" in refusal(sheets, ("'Tab'!C2", ["🐱" * 25_001]))
    assert "exceeds grid limits" in refusal(sheets, ("'Tab'!AA2", ["x"]))
    assert "exceeds grid limits" in refusal(sheets, ("'Tab'!C5", ["x"]))  # 2 data + 2 spare
    server.protected.append(("Tab", 2, 2, 1, 1))
    assert "protected cell" in refusal(sheets, ("'Tab'!C2", ["ok"]), ("'Tab'!B2", ["no"]))
    assert server.spreadsheets["book"]["Tab"] == [["id", "q"], ["a", "x"]]  # all or nothing
    write(sheets, ("'Tab'!C2", ["🐱" * 25_000]))
    assert len(server.spreadsheets["book"]["Tab"][1][2]) == 25_000


def test_columns_are_read_as_the_api_reads_them_and_the_grid_widens(api):
    server, sheets = api
    answer = (
        sheets.values()
        .batchGet(
            spreadsheetId="book", ranges=["'Tab'!1:1", "'Tab'!A2:A"], majorDimension="COLUMNS"
        )
        .execute()
    )
    assert [r.get("values") for r in answer["valueRanges"]] == [[["id"], ["q"]], [["a"]]]
    meta = sheets.get(spreadsheetId="book").execute()["sheets"][0]["properties"]
    assert meta["gridProperties"]["columnCount"] == 26
    body = {"requests": [{"appendDimension": {"sheetId": 0, "dimension": "COLUMNS", "length": 4}}]}
    sheets.batchUpdate(spreadsheetId="book", body=body).execute()
    write(sheets, ("'Tab'!AD2", ["fits now"]))
    assert server.spreadsheets["book"]["Tab"][1][29] == "fits now"
