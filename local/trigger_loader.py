"""`make test-loader`: trigger the local loader as Cloud Scheduler would, print its summary,
then follow the rows of the sheet it loaded until each is final, and show their outcomes.
Exits non-zero when the loader answered an error."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import httpx
from google.api_core.exceptions import GoogleAPIError
from rich.console import Console
from rich.table import Table

from local.devtools import emulator_client, reachable_or_exit
from shared.adapters.store import StatusStore
from shared.core.errors import BatchError
from shared.core.model import Status
from shared.core.rows import parse_rows
from shared.entrypoints.config import LoaderSettings, load

FINAL = {Status.SUCCESS, Status.FAILED}


def sheet_ids() -> list[str]:
    """The ids of the sheet the loader reads, read the same way (settings from .env)."""
    from shared.adapters.sheet import SheetReader
    from shared.core.rows import RowFilter
    from shared.entrypoints.wiring import sheets_service

    settings = load(LoaderSettings)
    reader = SheetReader(
        service=sheets_service(settings),
        spreadsheet_id=settings.spreadsheet_id,
        sheet_name=settings.sheet_name,
        chunk_rows=settings.sheet_chunk_rows,
    )
    header, body = reader.read()
    row_filter = (
        RowFilter(settings.row_filter_column, settings.row_filter_value)
        if settings.row_filter_column and settings.row_filter_value is not None
        else None
    )
    parsed = parse_rows(header, body, id_column=settings.unique_id_column, row_filter=row_filter)
    return [r.row_id for r in parsed.rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loader-url", default="http://127.0.0.1:8082")
    parser.add_argument("--wait", type=float, default=600, help="most seconds to follow the rows")
    parser.add_argument("options", nargs="*", help="e.g. dry_run=true retry_failed=true")
    args = parser.parse_args()
    console = Console()
    options = dict(o.split("=", 1) for o in args.options)
    reachable_or_exit(args.loader_url, "the loader", "make run-loader` (or `make run-local")
    try:
        answer = httpx.post(args.loader_url, json=options, timeout=1900)
    except httpx.HTTPError as exc:
        sys.exit(f"the loader at {args.loader_url} did not answer ({type(exc).__name__})")
    console.print(f"loader answered HTTP {answer.status_code}:")
    console.print_json(json.dumps(answer.json(), ensure_ascii=False))
    if answer.status_code != 200:
        sys.exit(1)
    if not os.environ.get("DATASTORE_EMULATOR_HOST") or options.get("dry_run"):
        return  # a real deployment, or a preview: the summary is all there is to show
    store = StatusStore(client=emulator_client("test-loader"))
    try:
        ids = sheet_ids()
    except BatchError as exc:
        sys.exit(f"could not read the sheet to follow its rows: {exc.describe()}")
    deadline = time.monotonic() + args.wait
    host = os.environ["DATASTORE_EMULATOR_HOST"]
    with console.status("following the sheet's rows…") as shown:
        while True:
            # The stack stopped meanwhile: say so at once rather than retry for a minute.
            reachable_or_exit(host, "the local stack", "make run-local")
            try:
                rows = store.get_many(ids)
            except (BatchError, GoogleAPIError) as exc:
                sys.exit(f"lost the emulator at {host} ({type(exc).__name__}): is the stack up?")
            open_rows = [r for r in rows.values() if r.status not in FINAL]
            shown.update(f"{len(ids) - len(open_rows)} of {len(ids)} rows final")
            if not open_rows or time.monotonic() > deadline:
                break
            time.sleep(1)
    entities = {e.key.name: e for e in store.client.get_multi([store.key(i) for i in ids])}
    table = Table(show_lines=True, title="The sheet's rows")
    for column in ("row", "id", "status", "attempts", "output or error"):
        table.add_column(column, overflow="fold")
    for row_id in ids:
        e = entities.get(row_id)
        if e is None:
            continue
        shown_text = e.get("result") or e.get("error") or ""
        table.add_row(
            str(e.get("row_number") or ""), row_id, e["status"], str(e.get("attempts")), shown_text
        )
    console.print(table)
    if open_rows:
        sys.exit(f"{len(open_rows)} rows were still not final after {args.wait:g} s")


if __name__ == "__main__":
    main()
