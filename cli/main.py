"""`dify-batch`: the operator's command line.

\b
    dify-batch status [--json]        counts, pace, time left, usage, latest failures, queue
    dify-batch watch                  a live progress bar until nothing waits or runs
    dify-batch export [--format csv]  every row, streamed page by page

Works against the emulator (DATASTORE_EMULATOR_HOST) and real Datastore (Application Default
Credentials: `gcloud auth application-default login`). Settings come from the options, the
environment, or a .env file in the current folder.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from dotenv import load_dotenv
from google.cloud import datastore
from rich.console import Console

from cli.actions import register, spend_line, spend_status
from cli.export import write_csv, write_jsonl
from cli.render import failures_table, follow, status_table
from shared.adapters.store import StatusReport
from shared.core.model import Status
from shared.core.progress import Progress, progress
from shared.entrypoints.config import queue_path

STATUSES = [s.value for s in Status]


@dataclass
class Context:
    project: str
    namespace: str | None
    queue: str | None
    location: str | None
    window_s: float = 300.0

    def report(self) -> StatusReport:
        _check_emulator()
        client = datastore.Client(project=self.project, namespace=self.namespace)
        return StatusReport(client=client)

    def progress(self, report: StatusReport) -> Progress:
        totals = report.totals(window=timedelta(seconds=self.window_s))
        return progress(
            totals.counts,
            finished_recently=totals.finished_recently,
            window_s=self.window_s,
            total_tokens=totals.total_tokens,
            workflow_seconds=totals.workflow_seconds,
        )

    def queue_state(self) -> dict[str, Any] | None:
        if not (self.queue and self.location):
            return None
        from shared.adapters.queue_control import QueueControl
        from shared.entrypoints.wiring import tasks_client

        control = QueueControl(
            client=tasks_client(os.environ.get("CLOUD_TASKS_EMULATOR_HOST") or None),
            datastore_client=datastore.Client(project=self.project, namespace=self.namespace),
            queue_path=queue_path(self.project, self.location, self.queue),
        )
        return control.state().to_dict()


def _check_emulator() -> None:
    """With the emulator configured, fail in seconds with advice rather than hang."""
    host = os.environ.get("DATASTORE_EMULATOR_HOST")
    if not host:
        return
    name, _, port = host.rpartition(":")
    with socket.socket() as probe:
        probe.settimeout(2)
        if probe.connect_ex((name or "127.0.0.1", int(port or 8081))) != 0:
            raise click.ClickException(
                f"no Datastore emulator answers at {host} (DATASTORE_EMULATOR_HOST): start it "
                "with `make run-emulator` (or `make run-local`), or unset the variable to use "
                "real Datastore"
            )


@click.group(help=__doc__)
@click.option("--project", envvar="GOOGLE_CLOUD_PROJECT", required=True, help="GCP project id.")
@click.option(
    "--namespace", envvar="DATASTORE_NAMESPACE", default=None, help="Datastore namespace."
)
@click.option("--queue", envvar="TASKS_QUEUE", default=None, help="Cloud Tasks queue id.")
@click.option("--location", envvar="TASKS_LOCATION", default=None, help="The queue's region.")
@click.pass_context
def cli(
    ctx: click.Context, project: str, namespace: str | None, queue: str | None, location: str | None
) -> None:
    ctx.obj = Context(project, namespace or None, queue or None, location or None)


@cli.command(help="Counts by status, pace and time left, usage, latest failures, queue state.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option("--window", default=5.0, show_default=True, help="Minutes the pace is measured over.")
@click.option("--failures", default=5, show_default=True, help="How many latest failures to list.")
@click.pass_obj
def status(ctx: Context, as_json: bool, window: float, failures: int) -> None:
    ctx.window_s = window * 60
    report = ctx.report()
    state = ctx.progress(report)
    failed = [
        {
            "id": f["id"],
            "row_number": f.get("row_number"),
            "workflow": f.get("workflow"),
            "error": f.get("error"),
        }
        for f in report.latest_failures(failures)
    ]
    queue = ctx.queue_state()
    spend = spend_status(report, state)
    if as_json:
        click.echo(
            json.dumps(
                {**state.to_dict(), "latest_failures": failed, "queue": queue, "spend": spend},
                ensure_ascii=False,
                default=str,
            )
        )
        return
    console = Console()
    console.print(status_table(state))
    console.print(spend_line(spend), highlight=False)
    if failed:
        console.print(failures_table(failed))
    if queue is not None:
        line = f"queue {queue['queue']}: {queue['state']}"
        if queue["state"] == "PAUSED":
            line += f" — {queue['paused_reason']}. Fix the cause, then `dify-batch resume`"
        console.print(line, style="bold red" if queue["state"] == "PAUSED" else None)


@cli.command(help="A live progress bar until nothing is PENDING or PROCESSING.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between readings.")
@click.pass_obj
def watch(ctx: Context, interval: float) -> None:
    report = ctx.report()
    console = Console()
    last = follow(lambda: ctx.progress(report), console, interval=interval)
    console.print(status_table(last, title="Finished"))


@cli.command(help="Every row as CSV or JSONL, streamed page by page (CSV ordered by sheet row).")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.option(
    "--status", "only", type=click.Choice(STATUSES), default=None, help="Only rows in it."
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (default: standard output).",
)
@click.option("--page-size", default=500, show_default=True, help="Rows read per query page.")
@click.pass_obj
def export(ctx: Context, fmt: str, only: str | None, output: Path | None, page_size: int) -> None:
    report = ctx.report()
    rows = report.rows(status=only, by_row=fmt == "csv", page_size=page_size)
    out = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        count = write_csv(rows, out) if fmt == "csv" else write_jsonl(rows, out)
    finally:
        if output:
            out.close()
    if output:
        click.echo(f"wrote {count:,} rows to {output}", err=True)


register(cli)  # run, pause, resume, retry, show (cli/actions.py)


def main() -> None:
    load_dotenv(".env", override=False)  # set variables always win over .env
    cli()


if __name__ == "__main__":
    main()
