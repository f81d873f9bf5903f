"""Pure: what an operator wants to know about a batch, from the counts by status."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Progress:
    total: int
    succeeded: int
    failed: int
    running: int  # PROCESSING
    waiting: int  # PENDING
    percent_done: float
    rows_per_second: float  # over the recent window
    seconds_left: float | None  # None: nothing finished recently, no estimate
    total_tokens: int
    workflow_seconds: float

    @property
    def settled(self) -> bool:
        return self.running == 0 and self.waiting == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def progress(
    counts: dict[str, int],
    *,
    finished_recently: int,
    window_s: float,
    total_tokens: int = 0,
    workflow_seconds: float = 0.0,
) -> Progress:
    succeeded, failed = counts.get("SUCCESS", 0), counts.get("FAILED", 0)
    running, waiting = counts.get("PROCESSING", 0), counts.get("PENDING", 0)
    total = succeeded + failed + running + waiting
    rate = finished_recently / window_s if window_s > 0 else 0.0
    left = running + waiting
    return Progress(
        total=total,
        succeeded=succeeded,
        failed=failed,
        running=running,
        waiting=waiting,
        percent_done=round(100.0 * (succeeded + failed) / total, 1) if total else 100.0,
        rows_per_second=round(rate, 3),
        seconds_left=(round(left / rate, 1) if rate > 0 else None) if left else 0.0,
        total_tokens=total_tokens,
        workflow_seconds=round(workflow_seconds, 3),
    )


def duration(seconds: float | None) -> str:
    """`1h 02m`, `3m 05s`, `12s`, or `?` when unknown."""
    if seconds is None:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
