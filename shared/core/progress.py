"""Pure: what an operator wants to know about a batch, from the counts by status."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

# Time left is only estimated from this much evidence: a few finished rows over a few seconds
# say little about the next thousand (a first wave of short rows, or of retries).
MIN_ROWS_FOR_ESTIMATE = 5
MIN_SECONDS_FOR_ESTIMATE = 10.0


@dataclass(frozen=True)
class Progress:
    total: int
    succeeded: int
    failed: int
    running: int  # PROCESSING
    waiting: int  # PENDING
    percent_done: float
    rows_per_second: float  # over the recent window, or the batch's life when it is younger
    seconds_left: float | None  # None: too little evidence for an estimate yet
    total_tokens: int
    workflow_seconds: float
    pace_seconds: float = 0.0  # how long the pace was measured over

    @property
    def settled(self) -> bool:
        return self.running == 0 and self.waiting == 0

    @property
    def empty(self) -> bool:
        return self.total == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pace_since(now: datetime, *, window: timedelta, batch_started: datetime | None) -> datetime:
    """From when the pace is measured: the window, or the batch's start when it is younger
    than the window (dividing 11 s of work by 5 minutes would say it is 27 times slower)."""
    since = now - window
    if batch_started is not None and since < batch_started <= now:
        return batch_started
    return since


def finite(value: Any) -> float:
    """A summed or stored number as a float, 0 for anything else (a hand-edited NaN, a string):
    one odd entity must not take the operator's view down."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value)
    return number if math.isfinite(number) else 0.0


def progress(
    counts: dict[str, int],
    *,
    finished_recently: int,
    window_s: float,
    total_tokens: Any = 0,
    workflow_seconds: Any = 0.0,
) -> Progress:
    """`finished_recently` rows finished over the last `window_s` seconds (the batch's age when
    it is younger: see pace_since)."""
    succeeded, failed = counts.get("SUCCESS", 0), counts.get("FAILED", 0)
    running, waiting = counts.get("PROCESSING", 0), counts.get("PENDING", 0)
    total = succeeded + failed + running + waiting
    rate = finished_recently / window_s if window_s > 0 else 0.0
    left = running + waiting
    enough = finished_recently >= MIN_ROWS_FOR_ESTIMATE and window_s >= MIN_SECONDS_FOR_ESTIMATE
    if not left:
        seconds_left: float | None = 0.0
    elif enough and rate > 0:
        seconds_left = round(left / rate, 1)
    else:
        seconds_left = None
    return Progress(
        total=total,
        succeeded=succeeded,
        failed=failed,
        running=running,
        waiting=waiting,
        percent_done=round(100.0 * (succeeded + failed) / total, 1) if total else 100.0,
        rows_per_second=round(rate, 3),
        seconds_left=seconds_left,
        total_tokens=int(finite(total_tokens)),
        workflow_seconds=round(finite(workflow_seconds), 3),
        pace_seconds=round(max(window_s, 0.0), 1),
    )


def duration(seconds: float | None) -> str:
    """`1h 02m`, `3m 05s`, `12s`, or `?` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
