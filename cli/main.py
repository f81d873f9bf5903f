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

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import click
from dotenv import dotenv_values
from google.api_core import exceptions as gexc
from google.cloud import datastore
from rich.console import Console

from cli.errors import explain
from cli.export import write_csv, write_jsonl
from cli.render import failures_table, follow, retrying_table, safe, status_table
from cli.target import NoProject, Target, resolve
from shared.adapters.store import StatusReport, StatusStore
from shared.core.model import Status
from shared.core.progress import Progress, progress
from shared.entrypoints.config import queue_path

STATUSES = [s.value for s in Status]


@contextlib.contextmanager
def _emulator_env(host: str | None) -> Iterator[None]:
    """google-cloud-datastore picks the emulator from the environment when a client is built:
    set (or hide) it for that moment only."""
    name = "DATASTORE_EMULATOR_HOST"
    before = os.environ.get(name)
    if host:
        os.environ[name] = host
    else:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class Session:
    """What every command shares: the target (resolved on first use, so `--help` needs no
    settings), one Datastore client, and a check that the emulator answers. Commands in other
    modules take it with `@pass_session` and open what they need with `client()`,
    `report()` or `store()`; `Commands` turns what goes wrong into one line."""

    def __init__(
        self,
        *,
        project: str | None,
        namespace: str | None,
        mode: str | None,
        queue: str | None,
        location: str | None,
    ) -> None:
        self._options = {
            "project": project,
            "namespace": namespace,
            "mode": mode,
            "queue": queue,
            "location": location,
        }
        self._client: datastore.Client | None = None

    @cached_property
    def target(self) -> Target:
        dotenv = dotenv_values(".env") if Path(".env").is_file() else {}
        try:
            return resolve(**self._options, shell=dict(os.environ), dotenv=dotenv)
        except NoProject as exc:
            raise click.UsageError(str(exc)) from None

    def check_reachable(self) -> None:
        """With the emulator, fail in seconds with advice rather than hang on retries."""
        host = self.target.emulator_host
        if not host:
            return
        name, _, port = host.rpartition(":")
        with socket.socket() as probe:
            probe.settimeout(2)
            answered = probe.connect_ex((name or "127.0.0.1", int(port or 8081))) == 0
        if not answered:
            raise click.ClickException(
                f"no Datastore emulator answers at {host} ({self.target.why}): start the "
                "local stack with `make run-local` (or `make run-emulator`), or add --cloud "
                "for real Datastore"
            )

    def client(self) -> datastore.Client:
        if self._client is None:
            click.echo(f"→ {self.target.describe()}", err=True)
            self.check_reachable()
            with _emulator_env(self.target.emulator_host):
                self._client = datastore.Client(
                    project=self.target.project, namespace=self.target.namespace
                )
        return self._client

    def report(self) -> StatusReport:
        return StatusReport(client=self.client())

    def store(self) -> StatusStore:
        return StatusStore(client=self.client())

    def no_rows(self) -> str:
        return f"no rows found in {self.target.where} — check --project/--namespace"

    def queue_state(self) -> dict[str, Any] | None:
        t = self.target
        if not (t.queue and t.location):
            return None
        from shared.adapters.queue_control import QueueControl
        from shared.entrypoints.wiring import tasks_client

        control = QueueControl(
            client=tasks_client(t.tasks_emulator_host),
            datastore_client=self.client(),
            queue_path=queue_path(t.project, t.location, t.queue),
        )
        return control.state().to_dict()


pass_session = click.make_pass_decorator(Session)


class Commands(click.Group):
    """Runs a command; a failure an operator can fix (credentials, an unreachable emulator or
    service, a missing index, a permission) ends as one line and exit 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(130) from None
        except Exception as exc:
            session = ctx.find_object(Session)
            line = explain(exc, session.target) if session is not None else None
            if line is None:
                raise
            raise click.ClickException(line) from None


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
    if as_json:
        click.echo(
            json.dumps(
                {
                    **state.to_dict(),
                    "latest_failures": failed,
                    "retrying": retrying,
                    "queue": queue,
                },
                ensure_ascii=False,
                default=str,
            )
        )
    else:
        console = Console()
        console.print(status_table(state))
        if failed:
            console.print(failures_table(failed))
        if retrying:
            console.print(retrying_table(retrying))
        if queue is not None:
            line = f"queue {safe(queue['queue'])}: {safe(queue['state'])}"
            if queue["state"] == "PAUSED":
                line += (
                    f" — {safe(queue['paused_reason'])}. Fix the cause, then run the loader "
                    "with resume=true"
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


@cli.command(help="Every row as CSV or JSONL, streamed page by page (CSV ordered by sheet row).")
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
@pass_session
def export(
    session: Session, fmt: str, only: str | None, output: Path | None, page_size: int
) -> None:
    fmt, only = fmt.lower(), only.upper() if only else None
    report = session.report()
    rows = report.rows(status=only, by_row=fmt == "csv", page_size=page_size)
    out = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        count = write_csv(rows, out) if fmt == "csv" else write_jsonl(rows, out)
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


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
