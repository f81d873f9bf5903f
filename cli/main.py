"""`dify-batch`: the operator's command line.

\b
    dify-batch status [--json]        counts, pace, time left, usage, failures, retries, queue
    dify-batch watch                  a live progress bar until nothing waits or runs
    dify-batch export [--format csv]  every row, streamed page by page

\b
Talks to real Datastore (Application Default Credentials: `gcloud auth application-default
login`) or to the local emulator; its first line (on stderr) says which. Settings come from
the options, then the environment, then a .env file in the current folder; .env (the local
stack's) is not used with --cloud or with a --project other than its own.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from google.api_core import exceptions as gexc
from rich.console import Console

from cli.actions import register, spend_line, spend_status
from cli.export import with_rows_not_run, write_csv, write_jsonl
from cli.render import failures_table, follow, retrying_table, safe, status_table
from cli.session import Commands, Session, pass_session
from shared.adapters.store import StatusReport
from shared.core.model import Status
from shared.core.progress import Progress, progress

STATUSES = [s.value for s in Status]


def measure(report: StatusReport, window_s: float) -> Progress:
    totals = report.totals(window=timedelta(seconds=window_s))
    return progress(
        totals.counts,
        finished_recently=totals.finished_recently,
        window_s=totals.pace_seconds or window_s,
        total_tokens=totals.total_tokens,
        workflow_seconds=totals.workflow_seconds,
    )


def _row_number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@click.group(cls=Commands, help=__doc__)
@click.option("--project", default=None, help="GCP project id (default: GOOGLE_CLOUD_PROJECT).")
@click.option("--namespace", default=None, help="Datastore namespace (default: none).")
@click.option(
    "--emulator/--cloud",
    "emulator",
    default=None,
    help="Read the local emulator (DATASTORE_EMULATOR_HOST, else 127.0.0.1:8081), or real "
    "Datastore. Default: the emulator only if the environment or .env names one.",
)
@click.option("--queue", default=None, help="Cloud Tasks queue id (default: TASKS_QUEUE).")
@click.option("--location", default=None, help="The queue's region (default: TASKS_LOCATION).")
@click.pass_context
def cli(
    ctx: click.Context,
    project: str | None,
    namespace: str | None,
    emulator: bool | None,
    queue: str | None,
    location: str | None,
) -> None:
    mode = None if emulator is None else ("emulator" if emulator else "cloud")
    ctx.obj = Session(
        project=project or None,
        namespace=namespace or None,
        mode=mode,
        queue=queue or None,
        location=location or None,
    )


@cli.command(help="Counts by status, pace and time left, usage, failures, retries, queue state.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option("--window", default=5.0, show_default=True, help="Minutes the pace is measured over.")
@click.option("--failures", default=5, show_default=True, help="How many latest failures to list.")
@pass_session
def status(session: Session, as_json: bool, window: float, failures: int) -> None:
    report = session.report()
    state = measure(report, window * 60)
    failed = [
        {
            "id": f.get("id"),
            "row_number": _row_number(f.get("row_number")),
            "workflow": f.get("workflow"),
            "error": f.get("error"),
        }
        for f in report.latest_failures(failures)
    ]
    try:
        waiting = report.retrying(failures) if state.running + state.waiting else []
    except gexc.FailedPrecondition:  # a deployment older than the `retrying` index
        waiting = []
        click.echo(
            "(rows waiting for a retry are listed once `terraform apply` has created the "
            "Datastore index `retrying`)",
            err=True,
        )
    retrying = [
        {
            "id": r.get("id"),
            "row_number": _row_number(r.get("row_number")),
            "status": r.get("status"),
            "attempts": r.get("attempts"),
            "error": r.get("error"),
        }
        for r in waiting
    ]
    queue = session.queue_state()
    spend = spend_status(report, state)
    if as_json:
        click.echo(
            json.dumps(
                {
                    **state.to_dict(),
                    "latest_failures": failed,
                    "retrying": retrying,
                    "queue": queue,
                    "spend": spend,
                },
                ensure_ascii=False,
                default=str,
            )
        )
    else:
        console = Console()
        console.print(status_table(state))
        console.print(safe(spend_line(spend)), highlight=False)
        if failed:
            console.print(failures_table(failed))
        if retrying:
            console.print(retrying_table(retrying))
        if queue is not None:
            line = f"queue {safe(queue['queue'])}: {safe(queue['state'])}"
            if queue["state"] == "PAUSED":
                line += (
                    f" — {safe(queue['paused_reason'])}. Fix the cause, then `dify-batch resume`"
                )
            console.print(line, style="bold red" if queue["state"] == "PAUSED" else None)
    if state.empty:
        raise click.ClickException(session.no_rows())


@cli.command(help="A live progress bar until nothing is PENDING or PROCESSING.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between readings.")
@click.option(
    "--wait-for-rows",
    default=120.0,
    show_default=True,
    help="Seconds to wait for the first rows to appear (a loader still starting) before giving up.",
)
@click.option("--window", default=5.0, show_default=True, help="Minutes the pace is measured over.")
@pass_session
def watch(session: Session, interval: float, wait_for_rows: float, window: float) -> None:
    report = session.report()
    console = Console()

    def read() -> Progress:
        session.check_reachable()  # an emulator stopped mid-watch: one line, at once
        return measure(report, window * 60)

    first = read()
    if first.empty:
        deadline = time.monotonic() + wait_for_rows
        click.echo(
            f"waiting up to {wait_for_rows:g} s for rows in {session.target.where}…", err=True
        )
        while first.empty and time.monotonic() < deadline:
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            first = read()
        if first.empty:
            raise click.ClickException(session.no_rows())
    last = follow(read, console, interval=interval)
    console.print(status_table(last, title="Finished"))


@cli.command(help="Every row as CSV or JSONL, streamed page by page, ordered by sheet row.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"], case_sensitive=False),
    default="csv",
    show_default=True,
)
@click.option(
    "--status",
    "only",
    type=click.Choice(STATUSES, case_sensitive=False),
    default=None,
    help="Only rows in it.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (default: standard output).",
)
@click.option("--page-size", default=500, show_default=True, help="Rows read per query page.")
@click.option(
    "--raw",
    is_flag=True,
    help="CSV: write cells as stored (by default a cell starting with = + - @ tab or CR gets a "
    "leading ' so a spreadsheet shows it as text instead of running it).",
)
@click.option("--no-bom", is_flag=True, help="CSV: no UTF-8 byte order mark (Excel needs it).")
@pass_session
def export(
    session: Session,
    fmt: str,
    only: str | None,
    output: Path | None,
    page_size: int,
    raw: bool,
    no_bom: bool,
) -> None:
    fmt, only = fmt.lower(), only.upper() if only else None
    report = session.report()
    rows = report.rows(status=only, by_row=True, page_size=page_size)
    if only is None:  # every sheet row: also those the loader did not store, with why
        rows = with_rows_not_run(rows, report.not_run())
    out = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        if fmt == "csv":
            count = write_csv(rows, out, raw=raw, bom=not no_bom)
        else:
            count = write_jsonl(rows, out)
    finally:
        if output:
            out.close()
    if output:
        click.echo(f"wrote {count:,} rows to {output}", err=True)
    if count == 0:
        if only:
            click.echo(f"no {only} rows in {session.target.where}", err=True)
        else:
            raise click.ClickException(session.no_rows())


register(cli)  # run, pause, resume, retry, show (cli/actions.py)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
