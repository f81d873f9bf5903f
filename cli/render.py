"""Tables and progress for people (rich), or plain lines where there is no terminal.

Every value that comes from a row (ids, errors, workflow names, a queue's pause reason) goes
through `safe`: a row id `[/]` or `[link=…]` is text, not markup, and escape sequences in an
error cannot move the cursor or retitle the terminal."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from shared.core.progress import Progress as BatchProgress
from shared.core.progress import duration

# C0 and C1 control characters (ESC, CSI, BEL, backspace…), but not tab and newline.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(value: Any) -> str:
    """A stored value as text without control characters (for plain, non-markup output)."""
    if value is None:
        return ""
    return _CONTROL.sub("", value if isinstance(value, str) else str(value))


def safe(value: Any) -> str:
    """A stored value as rich markup that shows exactly its text."""
    return escape(plain(value))


def time_left(p: BatchProgress) -> str:
    if p.seconds_left is None:
        return "estimating…" if p.total else "?"
    return duration(p.seconds_left)


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
    table.add_row("total", f"{p.total:,}", f"{p.percent_done:.1f} done" if p.total else "-")
    table.add_row(
        f"rows per second (last {duration(p.pace_seconds)})", f"{p.rows_per_second:g}", ""
    )
    table.add_row("time left (estimate)", time_left(p), "")
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
        table.add_row(safe(f.get("row_number")), safe(f.get("id")), safe(f.get("error")))
    return table


def retrying_table(rows: list[dict[str, Any]], title: str = "Retrying (last error)") -> Table:
    """Rows that failed for a passing reason and wait for, or run, another attempt."""
    table = Table(title=title, show_lines=True)
    table.add_column("row", justify="right")
    table.add_column("id")
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("last error", overflow="fold")
    for r in rows:
        table.add_row(
            safe(r.get("row_number")),
            safe(r.get("id")),
            safe(r.get("status")),
            safe(r.get("attempts")),
            safe(r.get("error")),
        )
    return table


def plain_line(p: BatchProgress) -> str:
    return (
        f"{p.percent_done:5.1f}% done: {p.succeeded} succeeded, {p.failed} failed, "
        f"{p.running} running, {p.waiting} waiting; {p.rows_per_second:g} rows/s; "
        f"left {time_left(p)}"
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
    `plain_every` seconds (CI logs; one line each, never wrapped mid-value). Returns the last
    reading."""
    if not console.is_terminal:
        last_line = 0.0
        while True:
            p = read()
            if until(p) or time.monotonic() - last_line >= plain_every:
                console.print(plain_line(p), highlight=False, markup=False, soft_wrap=True)
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
                    f"{p.rows_per_second:g} rows/s, left {time_left(p)}"
                ),
            )
            if until(p):
                return p
            time.sleep(interval)
