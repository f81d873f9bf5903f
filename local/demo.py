"""`make demo`: the whole batch on this machine, in one command.

Starts the emulator, the stand-ins (Sheets with the sample sheet or CSV=..., Cloud Tasks, and
a clearly labelled Dify stand-in, unless .env names a real sheet or Dify), the worker and the
loader as real functions-framework processes; triggers the loader, shows the progress until
every row is final, prints a summary, writes every row's result under results/, and stops
everything it started, also on Ctrl+C or failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from google.cloud import datastore
from rich.console import Console
from rich.table import Table

from cli.export import cell, csv_writer, write_csv, write_sheet_csv
from cli.render import failures_table, follow, safe
from local.sheets_standin import SAMPLE_CSV, read_csv
from local.stack import ROOT, Stack
from shared.adapters.store import StatusReport
from shared.core.progress import Progress, duration, progress


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", type=Path, default=SAMPLE_CSV, help="the sheet to run")
    parser.add_argument("--concurrency", type=int, default=5, help="rows at once (the cap)")
    parser.add_argument("--latency", type=float, default=1.0, help="the Dify stand-in's s/run")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many s")
    parser.add_argument(
        "--write-back",
        action="store_true",
        default=os.environ.get("WRITE_BACK", "").lower() in ("1", "true", "yes"),
        help="write every row's result back into the sheet (WRITE_BACK=true does the same)",
    )
    parser.add_argument(
        "--two-workflows",
        action="store_true",
        help="the bundled example of rows routed by their `kind` column to two Dify apps",
    )
    args = parser.parse_args()
    if args.two_workflows and args.csv == SAMPLE_CSV:
        args.csv = SAMPLE_CSV.with_name("sample_two_workflows.csv")
    if not args.csv.is_file():
        print(f"no such CSV file: {args.csv}", file=sys.stderr)
        return 2
    console = Console()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    stack = Stack(
        csv=args.csv.resolve(),
        namespace=f"demo-{stamp}",
        max_concurrent=args.concurrency,
        dify_latency=args.latency,
        write_back=args.write_back,
        two_workflows=args.two_workflows,
    )
    stack.handle_signals()  # Ctrl+C at any moment stops everything, without a traceback
    started = time.monotonic()
    try:
        console.rule("[bold]dify-batch-processor demo")
        stack.start()
        return _run(stack, console, stamp, started, args.timeout)
    except KeyboardInterrupt:
        console.print("\ninterrupted: stopping everything the demo started")
        return 130
    except RuntimeError as exc:  # a component that would not start says why
        console.print(f"[red]the demo could not run:[/] {exc}")
        return 1
    finally:
        stack.stop()
        console.print("stopped: emulator, stand-ins, worker and loader")


def _run(stack: Stack, console: Console, stamp: str, started: float, timeout: float) -> int:
    os.environ["DATASTORE_EMULATOR_HOST"] = stack.env["DATASTORE_EMULATOR_HOST"]
    answer = httpx.post(stack.env["LOADER_URL"], timeout=600)
    summary = answer.json()
    if answer.status_code != 200:
        console.print(f"[red]the loader answered HTTP {answer.status_code}:[/] {summary}")
        return 1
    console.print(
        f"loader: {summary['rows_read']} rows read, {summary['new']} new, "
        f"{summary['tasks_created']} tasks created, {summary['invalid_count']} invalid, "
        f"{summary['duplicate_count']} duplicate ids"
    )
    for row in summary.get("invalid", []):
        console.print(f"  invalid: row {row['row_number']} ({row['row_id']}): {row['reason']}")
    client = datastore.Client(
        project=stack.env["GOOGLE_CLOUD_PROJECT"], namespace=stack.env["DATASTORE_NAMESPACE"]
    )
    report = StatusReport(client=client)
    window = 30.0
    deadline = time.monotonic() + timeout

    def read() -> Progress:
        totals = report.totals(window=timedelta(seconds=window))
        return progress(
            totals.counts,
            finished_recently=totals.finished_recently,
            window_s=totals.pace_seconds or window,
            total_tokens=totals.total_tokens,
            workflow_seconds=totals.workflow_seconds,
        )

    last = follow(read, console, until=lambda p: p.settled or time.monotonic() > deadline)
    elapsed = time.monotonic() - started
    _summary(console, last, elapsed, report)
    results = ROOT / "results" / f"demo-{stamp}.csv"
    results.parent.mkdir(exist_ok=True)
    with results.open("w", encoding="utf-8", newline="") as out:
        if stack.sheets is not None:  # every row of the sheet, also those that did not run
            grid = read_csv(stack.csv)
            count = write_sheet_csv(grid, report.rows(by_row=True), summary, out)
        else:  # a real sheet (.env): the rows the loader stored
            count = write_csv(report.rows(by_row=True), out)
    console.print(f"results: {count} rows written to {results.relative_to(ROOT)}")
    if stack.write_back:
        _write_back(stack, console, stamp)
    if not last.settled:
        console.print(f"[red]gave up after {timeout:g} s with rows still waiting or running[/]")
        return 1
    return 0


def _write_back(stack: Stack, console: Console, stamp: str) -> None:
    """The loader's write-back-only run, then the sheet as its owners would now see it."""
    answer = httpx.post(stack.env["LOADER_URL"], json={"write_back_only": True}, timeout=600)
    written = answer.json().get("write_back", {})
    console.print(
        f"write-back: {written.get('rows_written', 0)} rows written into the sheet, columns "
        f"added: {', '.join(written.get('headers_added') or []) or 'none'}"
    )
    if stack.sheets is None:
        return
    path = ROOT / "results" / f"demo-{stamp}-sheet.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv_writer(out)  # a BOM, and formula-like cells shown as text
        for row in stack.sheets.spreadsheets["sample"]["Sheet1"]:
            writer.writerow([cell(v) for v in row])
    console.print(f"the sheet with its results: {path.relative_to(ROOT)}")


def _summary(console: Console, p: Progress, elapsed: float, report: StatusReport) -> None:
    table = Table(title="Demo summary")
    table.add_column("outcome")
    table.add_column("rows", justify="right")
    table.add_row("[green]SUCCESS[/]", str(p.succeeded))
    table.add_row("[red]FAILED[/]", str(p.failed))
    if not p.settled:
        table.add_row("still waiting or running", str(p.waiting + p.running))
    table.add_section()
    table.add_row("tokens (as Dify reported them)", f"{p.total_tokens:,}")
    table.add_row("workflow time, summed", duration(p.workflow_seconds))
    table.add_row("wall time, start to finish", duration(elapsed))
    console.print(table)
    by_workflow = Counter(
        (r.get("workflow") or "default", r.get("status")) for r in report.rows(by_row=False)
    )
    if len({w for w, _ in by_workflow}) > 1:
        for (workflow, status), count in sorted(by_workflow.items()):
            console.print(f"  workflow {workflow}: {count} {status}")
    failures = report.latest_failures(20)
    if failures:
        console.print(failures_table(failures, "Failed rows and why"))
    retried = [
        r for r in report.rows(status="SUCCESS", by_row=False) if (r.get("attempts") or 0) > 1
    ]
    for row in retried:
        before = f" (before that: {safe(row['last_error'])})" if row.get("last_error") else ""
        console.print(
            f"row {safe(row.get('row_number'))} ({safe(row['id'])}) succeeded after "
            f"{safe(row['attempts'])} attempts{before}"
        )


if __name__ == "__main__":
    sys.exit(main())
