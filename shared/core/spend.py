"""Pure: the spend limit (MAX_TOTAL_TOKENS, and a workflow's `max_total_tokens`): is it reached,
what the operator reads when it is, and what the rows still waiting will cost on average.

Totals come from the worker's running counter (shared/adapters/store.py), keyed by the
workflow a row names; "" is a row that names none (the default workflow's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SPEND_CODE = "spend_limit"  # the pause note's code when the worker paused for spend


@dataclass(frozen=True)
class SpendLimits:
    """0 or absent: no limit."""

    total: int = 0  # MAX_TOTAL_TOKENS: every workflow of the sheet (namespace) together
    workflows: Mapping[str, int] = field(default_factory=dict)  # workflow -> its own limit

    @property
    def active(self) -> bool:
        return self.total > 0 or any(v > 0 for v in self.workflows.values())


def spend_reason(spent: int, limit: int, workflow: str | None = None) -> str:
    where = f" (workflow {workflow!r})" if workflow else ""
    return f"spend limit reached: {spent:,} of {limit:,} tokens{where}"


def workflow_total(totals: Mapping[str, int], workflow: str, *, default: str) -> int:
    return totals.get(workflow, 0) + (totals.get("", 0) if workflow == default else 0)


def limit_reached(
    totals: Mapping[str, int], limits: SpendLimits, *, workflows: list[str], default: str
) -> str | None:
    """Why rows of `workflows` must not run now (the first limit reached), or None."""
    if limits.total > 0:
        spent = sum(totals.values())
        if spent >= limits.total:
            return spend_reason(spent, limits.total)
    for name in workflows:
        limit = limits.workflows.get(name, 0)
        if limit > 0:
            spent = workflow_total(totals, name, default=default)
            if spent >= limit:
                return spend_reason(spent, limit, name)
    return None


def projection(
    *, charged: int, tokens_of_finished: int, finished_rows: int, rows_left: int
) -> dict[str, Any]:
    """Tokens so far and the projected total once the rows still waiting or running have run,
    at the average per finished row (None while no row has finished)."""
    average = tokens_of_finished / finished_rows if finished_rows else None
    return {
        "tokens_so_far": charged,
        "average_per_row": round(average, 1) if average is not None else None,
        "rows_left": rows_left,
        "projected_total": round(charged + average * rows_left) if average is not None else None,
    }
