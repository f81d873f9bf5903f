"""Tables and progress for people (rich), or plain lines where there is no terminal."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from shared.core.progress import Progress as BatchProgress
from shared.core.progress import duration


def status_table(p: BatchProgress, title: str = "Batch status") -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("", style="bold")
    table.add_column("rows", justify="right")
    table.add_column("%", justify="right")
    for name, value, style in (
        ("SUCCESS", p.succeeded, "green"),
        ("FAILED", p.failed, "red"),
        ("PROCESSING (running)", p.running, "yellow"),
        ("PENDING (waiting)", p.waiting, "cyan"),
    ):
        share = f"{100.0 * value / p.total:.1f}" if p.total else "-"
        table.add_row(f"[{style}]{name}[/]", f"{value:,}", share)
    table.add_section()
    table.add_row("total", f"{p.total:,}", f"{p.percent_done:.1f} done")
    table.add_row("rows per second (recent)", f"{p.rows_per_second:g}", "")
    table.add_row("time left (estimate)", duration(p.seconds_left), "")
    table.add_row("tokens", f"{p.total_tokens:,}", "")
    table.add_row("workflow time", duration(p.workflow_seconds), "")
    return table


def failures_table(failures: list[dict[str, Any]], title: str = "Latest failures") -> Table:
    """Failed rows with their sheet row, id and error (wrapped, never cut)."""
    table = Table(title=title, show_lines=True)
    table.add_column("row", justify="right")
    table.add_column("id")
    table.add_column("error", overflow="fold")
    for f in failures:
        table.add_row(str(f.get("row_number") or ""), str(f["id"]), str(f.get("error") or ""))
    return table


def plain_line(p: BatchProgress) -> str:
    return (
        f"{p.percent_done:5.1f}% done: {p.succeeded} succeeded, {p.failed} failed, "
        f"{p.running} running, {p.waiting} waiting; {p.rows_per_second:g} rows/s; "
        f"left {duration(p.seconds_left)}"
    )


def follow(
    read: Callable[[], BatchProgress],
    console: Console,
    *,
    interval: float = 1.0,
    until: Callable[[BatchProgress], bool] = lambda p: p.settled,
    plain_every: float = 5.0,
) -> BatchProgress:
    """Show progress until `until` holds: a live bar on a terminal, else a plain line every
    `plain_every` seconds (CI logs). Returns the last reading."""
    if not console.is_terminal:
        last_line = 0.0
        while True:
            p = read()
            if until(p) or time.monotonic() - last_line >= plain_every:
                console.print(plain_line(p), highlight=False)
                last_line = time.monotonic()
            if until(p):
                return p
            time.sleep(interval)
    columns: list[Any] = [
        TextColumn("[bold]rows"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("rows", total=None, detail="")
        while True:
            p = read()
            bar.update(
                task,
                total=max(p.total, 1),
                completed=p.succeeded + p.failed,
                detail=(
                    f"[green]{p.succeeded} done[/] [red]{p.failed} failed[/] "
                    f"[yellow]{p.running} running[/] [cyan]{p.waiting} waiting[/] "
                    f"{p.rows_per_second:g} rows/s, left {duration(p.seconds_left)}"
                ),
            )
            if until(p):
                return p
            time.sleep(interval)
