"""The operator's actions, without curl: run the loader now, pause and resume the queue, put
FAILED rows back in it, and show one row.

`run`, `pause`, `resume` and `retry` go through the loader (LOADER_URL: the deployed function,
with an identity token minted from the operator's credentials as `gcloud auth
print-identity-token` would; or the local stack's loader, without one), so the operator needs
only the invoker role on it, and the loader's own checks apply (a spend pause is resumed only
once the limit allows it). `retry` and `show` read the rows from Datastore like `status`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import httpx
from dotenv import dotenv_values
from google.api_core import exceptions as gexc
from rich.console import Console
from rich.table import Table

from shared.core.model import Status
from shared.core.spend import projection
from shared.entrypoints.http import MAX_RETRY_IDS

T = TypeVar("T")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOADER_TIMEOUT_S = 600.0  # the loader's own limit is 540 s (Terraform)
NO_URL = (
    "no loader URL: pass --loader-url or set LOADER_URL (deployed: `terraform output -raw "
    "loader_url`; the local stack: http://127.0.0.1:8082)"
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

loader_url_option = click.option(
    "--loader-url",
    envvar="LOADER_URL",
    default=None,
    help="The loader's URL (default: LOADER_URL).",
)


# -- talking to the loader ------------------------------------------------------------------


def identity_token(audience: str) -> str:
    """An identity token for `audience` from the operator's credentials, as gcloud mints one:
    a user's (gcloud auth application-default login) is the id_token their refresh returns;
    a service account's (key file, impersonation, metadata server) comes from google-auth's
    id_token helpers."""
    import google.auth
    import google.auth.exceptions
    import google.oauth2.credentials
    import google.oauth2.id_token
    from google.auth import impersonated_credentials
    from google.auth.transport.requests import Request

    advice = (
        "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS "
        "to a service-account key file"
    )
    try:
        credentials, _ = google.auth.default()
        if isinstance(credentials, google.oauth2.credentials.Credentials):
            credentials.refresh(Request())
            token = credentials.id_token
            if not token:
                raise click.ClickException(
                    "your user credentials gave no identity token (they were made without "
                    f"the openid scope): {advice}"
                )
            return str(token)
        if isinstance(credentials, impersonated_credentials.Credentials):
            # application-default login --impersonate-service-account
            minted = impersonated_credentials.IDTokenCredentials(
                credentials, target_audience=audience, include_email=True
            )
            minted.refresh(Request())
            return str(minted.token)
        return str(google.oauth2.id_token.fetch_id_token(Request(), audience))
    except google.auth.exceptions.GoogleAuthError as exc:
        raise click.ClickException(
            f"could not mint an identity token for the loader ({type(exc).__name__}): {advice}"
        ) from None


def call_loader(url: str | None, body: dict[str, Any]) -> dict[str, Any]:
    """POST the options to the loader; its summary, or a one-line refusal saying why."""
    url = url or setting("LOADER_URL")
    if not url:
        raise click.ClickException(NO_URL)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.ClickException(f"LOADER_URL {url!r} is not an http(s) URL")
    headers = {}
    if parts.hostname not in LOCAL_HOSTS:
        headers["Authorization"] = f"Bearer {identity_token(url)}"
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=LOADER_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"no answer from the loader at {url} ({type(exc).__name__}): is it deployed, or "
            "the local stack running (make run-local)?"
        ) from None
    if response.status_code == 401:
        raise click.ClickException(
            "the loader refused the identity token (401): log in again (gcloud auth "
            "application-default login) and check LOADER_URL is the loader's URL"
        )
    if response.status_code == 403:
        raise click.ClickException(
            "no permission to invoke the loader (403): your account needs the Cloud Run Invoker "
            "role on it (roles/run.invoker)"
        )
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise click.ClickException(
            f"the loader answered {response.status_code} without a JSON summary: "
            f"{response.text[:200]!r}"
        )
    if "error" in answer and response.status_code >= 400:
        raise click.ClickException(
            f"the loader refused ({response.status_code}): {answer['error']}"
        )
    return answer


def setting(name: str) -> str | None:
    """A setting from the environment, else from .env in the current folder."""
    value = os.environ.get(name)
    if value is None and Path(".env").is_file():
        value = dotenv_values(".env").get(name)
    return value.strip() or None if value else None


def where(obj: Any) -> str:
    """Which rows the command read, for messages: the session's target where `cli/main.py`
    has one, else its project and namespace."""
    target = getattr(obj, "target", None)
    if target is not None:
        return str(target.where)
    namespace = getattr(obj, "namespace", None)
    space = f"namespace {namespace}" if namespace else "the default namespace"
    return f"project {getattr(obj, 'project', '?')}, {space}"


def _reading(obj: Any, read: Callable[[], T]) -> T:
    """A Datastore read for `retry`/`show`, refused in one line when the account may not."""
    try:
        return read()
    except (gexc.PermissionDenied, gexc.Unauthenticated) as exc:
        raise click.ClickException(
            f"no permission to read the rows in Datastore ({where(obj)}): "
            f"{type(exc).__name__}; your account needs roles/datastore.viewer, and "
            "`gcloud auth application-default login`"
        ) from None


# -- what the loader said -------------------------------------------------------------------


def _queues(summary: dict[str, Any]) -> list[dict[str, Any]]:
    main = summary.get("queue") or {}
    return [main, *(main.get("queues") or {}).values()] if main else []


def _counts(items: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in items.items()) or "0"


def summary_table(summary: dict[str, Any]) -> Table:
    title = "Loader run (dry run: nothing written)" if summary.get("dry_run") else "Loader run"
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    rows: list[tuple[str, Any]] = [
        ("rows read", f"{summary.get('rows_read', 0):,}"),
        ("new rows", f"{summary.get('new', 0):,}"),
        ("re-enqueued", _counts(summary.get("re_enqueued") or {})),
        ("inputs updated", f"{summary.get('inputs_updated', 0):,}"),
        ("skipped", _counts(summary.get("skipped") or {})),
        (
            "filtered out / blank",
            f"{summary.get('filtered_out', 0):,} / {summary.get('blank_rows', 0):,}",
        ),
        ("invalid rows", f"{summary.get('invalid_count', 0):,}"),
        ("duplicate ids", f"{summary.get('duplicate_count', 0):,}"),
        ("tasks created", f"{summary.get('tasks_created', 0):,}"),
        ("tasks already queued", f"{summary.get('tasks_existing', 0):,}"),
        ("errors", f"{summary.get('error_count', 0):,}"),
    ]
    write_back = summary.get("write_back") or {}
    if write_back:
        rows.append(("written back", f"{write_back.get('rows_written', 0):,} rows"))
    spend = summary.get("spend") or {}
    if spend:
        limit = spend.get("max_total_tokens") or 0
        rows.append(
            ("tokens so far", f"{spend['tokens_so_far']:,}" + (f" of {limit:,}" if limit else ""))
        )
    for queue in _queues(summary):
        rows.append((f"queue {queue.get('queue')}", queue_line(queue)))
    rows.append(("took", f"{summary.get('elapsed_s', 0):g} s"))
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def queue_line(queue: dict[str, Any]) -> str:
    line = str(queue.get("state"))
    if queue.get("paused_reason"):
        line += f" ({queue['paused_reason']})"
    if queue.get("resume_refused"):
        line += f"; not resumed: {queue['resume_refused']}"
    return line


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False, default=str))
        return
    console = Console()
    console.print(summary_table(summary))
    for error in summary.get("errors") or []:
        console.print(f"[red]error[/] {error.get('id')}: {error.get('error')}", highlight=False)


def _exit_on_errors(summary: dict[str, Any]) -> None:
    if summary.get("error_count"):
        raise click.ClickException(
            f"{summary['error_count']:,} error(s) in the loader run (listed above); the next "
            "run retries what was left"
        )


# -- selecting FAILED rows ------------------------------------------------------------------


def parse_since(text: str, now: datetime) -> datetime:
    """`30m`, `2h`, `1d` ago, or an ISO date/time (UTC when it names no zone)."""
    match = _DURATION.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2).lower()])
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (30m, 2h, 1d) nor a date/time (2026-12-01T09:00)",
            param_hint="--since",
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def select_failed(
    rows: Iterable[dict[str, Any]],
    *,
    error_contains: str | None,
    since: datetime | None,
    workflow: str | None,
) -> list[dict[str, Any]]:
    """The FAILED rows matching every given selector (the error text case-insensitively)."""
    wanted = error_contains.casefold() if error_contains else None
    chosen = []
    for row in rows:
        if row.get("status") != Status.FAILED:
            continue
        if wanted is not None and wanted not in str(row.get("error") or "").casefold():
            continue
        finished = row.get("finished_at")
        if since is not None and (finished is None or finished < since):
            continue
        if workflow is not None and (row.get("workflow") or "default") != workflow:
            continue
        chosen.append(row)
    return chosen


def rows_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, show_lines=True)
    table.add_column("row", justify="right")
    table.add_column("id")
    table.add_column("workflow")
    table.add_column("finished")
    table.add_column("error", overflow="fold")
    for r in rows:
        finished = r.get("finished_at")
        table.add_row(
            str(r.get("row_number") or ""),
            str(r["id"]),
            str(r.get("workflow") or "default"),
            finished.strftime("%Y-%m-%d %H:%M") if isinstance(finished, datetime) else "",
            str(r.get("error") or ""),
        )
    return table


# -- one row --------------------------------------------------------------------------------

SHOWN = (
    "status",
    "attempts",
    "workflow",
    "row_number",
    "error",
    "workflow_run_id",
    "total_tokens",
    "elapsed_time",
    "created_at",
    "updated_at",
    "finished_at",
    "lease_expires_at",
    "generation",
)


def _json_text(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def row_record(entity: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {"id": entity["id"]}
    record.update({k: entity.get(k) for k in SHOWN})
    record["inputs"] = _json_text(entity.get("inputs"))
    record["outputs"] = _json_text(entity.get("result"))
    return record


def row_table(record: dict[str, Any]) -> Table:
    table = Table(title=f"Row {record['id']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    for name, value in record.items():
        if name == "id":
            continue
        if isinstance(value, dict | list):
            text = json.dumps(value, ensure_ascii=False, indent=2)
        elif isinstance(value, datetime):
            text = value.isoformat()
        else:
            text = "" if value is None else str(value)
        table.add_row(name, text)
    return table


# -- the commands ---------------------------------------------------------------------------


def register(cli: click.Group) -> None:
    """Add the actions to `dify-batch` (`ctx.obj` gives `report()` for Datastore reads)."""
    for command in (run, pause, resume, retry, show):
        cli.add_command(command)


@click.command(help="Run the loader now and print its summary.")
@loader_url_option
@click.option("--dry-run", is_flag=True, help="Plan only: write and enqueue nothing.")
@click.option("--retry-failed", is_flag=True, help="Run every FAILED row in the sheet again.")
@click.option("--reprocess-changed", is_flag=True, help="Run finished rows whose inputs changed.")
@click.option("--resume", "resume_", is_flag=True, help="Resume a paused queue first.")
@click.option("--write-back-only", is_flag=True, help="Only write finished rows into the sheet.")
@click.option("--json", "as_json", is_flag=True, help="The loader's summary as JSON.")
def run(
    loader_url: str | None,
    dry_run: bool,
    retry_failed: bool,
    reprocess_changed: bool,
    resume_: bool,
    write_back_only: bool,
    as_json: bool,
) -> None:
    options = {
        "dry_run": dry_run,
        "retry_failed": retry_failed,
        "reprocess_changed": reprocess_changed,
        "resume": resume_,
        "write_back_only": write_back_only,
    }
    summary = call_loader(loader_url, {k: v for k, v in options.items() if v})
    _print_summary(summary, as_json)
    _exit_on_errors(summary)


@click.command(help="Pause the queue(s): rows in flight finish, no new row starts.")
@loader_url_option
@click.option("--json", "as_json", is_flag=True, help="The loader's answer as JSON.")
def pause(loader_url: str | None, as_json: bool) -> None:
    summary = call_loader(loader_url, {"pause": True})
    if as_json:
        _print_summary(summary, True)
        return
    queues = _queues(summary)
    paused = [q for q in queues if q.get("paused")]
    for q in queues:
        done = "paused" if q.get("paused") else f"already {queue_line(q)}"
        click.echo(f"queue {q.get('queue')}: {done}")
    click.echo(
        f"paused {len(paused)} of {len(queues)} queue(s); rows in flight finish. Resume with "
        "`dify-batch resume`."
    )


@click.command(
    help="Resume the paused queue(s) (a spend pause only once the limit allows it); the loader "
    "run that does it also enqueues what is missing."
)
@loader_url_option
@click.option("--json", "as_json", is_flag=True, help="The loader's summary as JSON.")
def resume(loader_url: str | None, as_json: bool) -> None:
    summary = call_loader(loader_url, {"resume": True})
    if as_json:
        _print_summary(summary, True)
    queues = _queues(summary)
    refused = [q for q in queues if q.get("resume_refused")]
    if not as_json:
        for q in queues:
            if q.get("resumed"):
                state = f"resumed (was paused: {q.get('was')})"
            elif q.get("resume_refused"):
                state = f"NOT resumed: {q['resume_refused']}"
            else:
                state = f"not paused ({q.get('state')}), nothing to resume"
            click.echo(f"queue {q.get('queue')}: {state}")
        resumed = sum(1 for q in queues if q.get("resumed"))
        click.echo(
            f"resumed {resumed} of {len(queues)} queue(s); the loader run enqueued "
            f"{summary.get('tasks_created', 0):,} task(s)"
        )
    if refused:
        raise click.ClickException(f"{len(refused)} queue(s) stay paused for spend")


@click.command(
    help="Put FAILED rows back to PENDING and enqueue them: by ids, --error-contains, --since, "
    "--workflow (all must match), or --all."
)
@click.argument("row_ids", nargs=-1)
@click.option("--error-contains", default=None, help="Rows whose error has TEXT (any case).")
@click.option("--since", default=None, help="Rows failed since: 30m, 2h, 1d, or a date/time.")
@click.option("--workflow", default=None, help="Rows of this workflow (WORKFLOWS).")
@click.option("--all", "every", is_flag=True, help="Every FAILED row.")
@click.option("--dry-run", is_flag=True, help="Show what would be retried; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="The selection and the outcome as JSON.")
@loader_url_option
@click.pass_obj
def retry(
    ctx: Any,
    row_ids: tuple[str, ...],
    error_contains: str | None,
    since: str | None,
    workflow: str | None,
    every: bool,
    dry_run: bool,
    as_json: bool,
    loader_url: str | None,
) -> None:
    if not (row_ids or error_contains or since or workflow or every):
        raise click.UsageError(
            "say which FAILED rows to retry: ids, --error-contains TEXT, --since, --workflow, "
            "or --all"
        )
    loader_url = loader_url or setting("LOADER_URL")
    if not dry_run and not loader_url:
        raise click.ClickException(NO_URL)  # before reading anything
    since_at = parse_since(since, datetime.now(UTC)) if since else None
    report = ctx.report()
    if row_ids:
        found = _reading(ctx, lambda: {i: report.row(i) for i in dict.fromkeys(row_ids)})
        candidates = [r for r in found.values() if r is not None]
        unknown = [i for i, r in found.items() if r is None]
    else:
        failed = report.rows(status=Status.FAILED.value, by_row=False)
        candidates, unknown = _reading(ctx, lambda: list(failed)), []
    chosen = select_failed(
        candidates, error_contains=error_contains, since=since_at, workflow=workflow
    )
    not_failed = [r["id"] for r in candidates if r.get("status") != Status.FAILED]
    notes = []
    if unknown:
        notes.append(f"{len(unknown)} id(s) not found: {', '.join(unknown[:10])}")
    if not_failed:
        notes.append(
            f"{len(not_failed)} row(s) not FAILED, left alone: {', '.join(not_failed[:10])}"
        )
    outcome: dict[str, Any] = {
        "selected": len(chosen),
        "ids": [r["id"] for r in chosen],
        "not_found": unknown,
        "not_failed": not_failed,
    }
    if dry_run or not chosen:
        outcome["retried"] = 0
        if as_json:
            click.echo(json.dumps(outcome, ensure_ascii=False))
            return
        console = Console()
        if chosen:
            console.print(rows_table(chosen, "FAILED rows that would be retried"))
        for note in notes:
            console.print(note, highlight=False)
        verb = "would retry" if dry_run else "nothing to retry:"
        click.echo(f"{verb} {len(chosen):,} FAILED row(s)" + ("" if dry_run else " matched"))
        return
    if len(chosen) > MAX_RETRY_IDS:
        raise click.ClickException(
            f"{len(chosen):,} rows selected, more than the {MAX_RETRY_IDS:,} one call may retry: "
            "narrow the selection, or retry every FAILED row of the sheet with "
            "`dify-batch run --retry-failed`"
        )
    summary = call_loader(loader_url, {"retry_ids": outcome["ids"]})
    retried = int((summary.get("re_enqueued") or {}).get("retry_selected", 0))
    outcome.update(retried=retried, tasks_created=summary.get("tasks_created", 0))
    if as_json:
        click.echo(json.dumps({**outcome, "loader": summary}, ensure_ascii=False, default=str))
    else:
        for note in notes:
            click.echo(note)
        click.echo(
            f"retried {retried:,} of {len(chosen):,} selected FAILED row(s): back to PENDING, "
            f"{summary.get('tasks_created', 0):,} task(s) created"
        )
        if retried < len(chosen):
            click.echo(
                f"{len(chosen) - retried:,} not retried: no longer in the sheet (or its row "
                "filter), or no longer FAILED"
            )
    _exit_on_errors(summary)


@click.command(help="One row's record: status, attempts, inputs, outputs, error, run id, tokens.")
@click.argument("row_id")
@click.option("--json", "as_json", is_flag=True, help="The record as JSON.")
@click.pass_obj
def show(ctx: Any, row_id: str, as_json: bool) -> None:
    report = ctx.report()
    entity = _reading(ctx, lambda: report.row(row_id))
    if entity is None:
        raise click.ClickException(
            f"no row with id {row_id!r} in {where(ctx)}: check the id (the "
            "sheet's unique id column) and --namespace"
        )
    record = row_record(entity)
    if as_json:
        click.echo(json.dumps(record, ensure_ascii=False, default=str))
        return
    Console().print(row_table(record))


# -- the spend part of `status` -------------------------------------------------------------


def spend_status(report: Any, progress: Any) -> dict[str, Any]:
    """Tokens charged so far (the worker's counter), the projection for the rows left, and
    the limit when this shell knows it (MAX_TOTAL_TOKENS)."""
    view = projection(
        charged=sum(report.charged().values()) or progress.total_tokens,
        tokens_of_finished=progress.total_tokens,
        finished_rows=progress.succeeded + progress.failed,
        rows_left=progress.waiting + progress.running,
    )
    limit = setting("MAX_TOTAL_TOKENS") or ""
    if limit.isdigit() and int(limit) > 0:
        view["max_total_tokens"] = int(limit)
    return view


def spend_line(view: dict[str, Any]) -> str:
    line = f"tokens so far {view['tokens_so_far']:,}"
    if view.get("max_total_tokens"):
        line += f" of {view['max_total_tokens']:,} (MAX_TOTAL_TOKENS)"
    if view["projected_total"] is not None and view["rows_left"]:
        line += (
            f"; projected {view['projected_total']:,} once the {view['rows_left']:,} rows left "
            f"have run (~{view['average_per_row']:,} per row)"
        )
    return line
