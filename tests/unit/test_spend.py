"""The spend limit's pure parts: when it is reached, what the operator reads, the projection,
its settings, and how the operator's actions pick FAILED rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import flask
import pytest

from cli.actions import parse_since, select_failed
from shared.core.errors import ConfigError
from shared.core.planning import LoadOptions
from shared.core.spend import SpendLimits, limit_reached, projection
from shared.core.workflows import parse_workflows
from shared.entrypoints.config import WorkerSettings, load
from shared.entrypoints.http import parse_load_options

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def reached(totals, limits, workflow="default"):
    return limit_reached(totals, limits, workflows=[workflow], default="default")


def test_no_limit_is_never_reached():
    assert not SpendLimits().active
    assert reached({"": 10**12}, SpendLimits()) is None


def test_the_sheet_limit_counts_every_workflow_and_is_reached_at_the_limit():
    limits = SpendLimits(total=1000)
    assert reached({"": 600, "translate": 399}, limits) is None
    assert reached({"": 600, "translate": 400}, limits) == (
        "spend limit reached: 1,000 of 1,000 tokens"
    )


def test_a_workflow_limit_counts_that_workflow_only():
    limits = SpendLimits(workflows={"translate": 500})
    assert limits.active
    assert reached({"": 10_000, "translate": 499}, limits, "translate") is None
    assert reached({"translate": 501}, limits, "translate") == (
        "spend limit reached: 501 of 500 tokens (workflow 'translate')"
    )
    # Rows that name no workflow are the default workflow's.
    assert reached({"": 300, "default": 300}, SpendLimits(workflows={"default": 600})) == (
        "spend limit reached: 600 of 600 tokens (workflow 'default')"
    )
    assert reached({"translate": 501}, limits, "default") is None


def test_projection_is_the_average_per_finished_row_times_the_rows_left():
    view = projection(charged=1_230, tokens_of_finished=1_230, finished_rows=10, rows_left=90)
    assert view == {
        "tokens_so_far": 1_230,
        "average_per_row": 123.0,
        "rows_left": 90,
        "projected_total": 12_300,
    }
    assert (
        projection(charged=0, tokens_of_finished=0, finished_rows=0, rows_left=5)["projected_total"]
        is None
    )


@pytest.mark.parametrize("value", ["-1", "1.5", "lots"])
def test_max_total_tokens_must_be_a_whole_number_of_at_least_zero(monkeypatch, value):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    monkeypatch.setenv("DIFY_API_ENDPOINT", "https://api.dify.ai/v1/workflows/run")
    monkeypatch.setenv("DIFY_API_KEY", "app-secret-value")
    monkeypatch.setenv("MAX_TOTAL_TOKENS", value)
    with pytest.raises(ConfigError) as caught:
        load(WorkerSettings)
    assert "MAX_TOTAL_TOKENS is invalid" in caught.value.message
    monkeypatch.setenv("MAX_TOTAL_TOKENS", "250000")
    assert load(WorkerSettings).max_total_tokens == 250_000


def test_a_workflow_names_its_own_limit():
    spec = '{"a": {"endpoint": "https://x/v1/workflows/run", "api_key": "app-1", %s}}'
    assert parse_workflows(spec % '"max_total_tokens": 5000')["a"].max_total_tokens == 5000
    with pytest.raises(ConfigError, match="workflow 'a': max_total_tokens"):
        parse_workflows(spec % '"max_total_tokens": -1')


def options(body):
    with flask.Flask(__name__).test_request_context("/", method="POST", json=body):
        return parse_load_options(flask.request)


def test_the_loader_takes_the_rows_to_retry_and_a_pause():
    assert options({"retry_ids": ["r1", "질문-2"]}) == LoadOptions(
        retry_ids=frozenset({"r1", "질문-2"})
    )
    assert options({"pause": True}) == LoadOptions(pause=True)
    for bad in ("r1", [""], [1], ["x"] * 10_001):
        answer = options({"retry_ids": bad})
        assert isinstance(answer, tuple)
        assert answer[1] == 400
        assert "retry_ids must be a JSON list" in answer[0]["error"]


def test_since_takes_a_duration_or_a_date():
    assert parse_since("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_since("2H", NOW) == NOW - timedelta(hours=2)
    assert parse_since("1d", NOW) == NOW - timedelta(days=1)
    assert parse_since("2026-11-30T09:00", NOW) == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    with pytest.raises(click.BadParameter, match="neither a duration"):
        parse_since("yesterday", NOW)


def test_selectors_all_have_to_match():
    rows = [
        {"id": "a", "status": "FAILED", "error": "Timeout: LLM", "finished_at": NOW},
        {"id": "b", "status": "FAILED", "error": "invalid_param", "finished_at": NOW},
        {"id": "c", "status": "FAILED", "error": "timeout", "workflow": "t", "finished_at": NOW},
        {"id": "d", "status": "FAILED", "error": "timeout", "finished_at": NOW - timedelta(3)},
        {"id": "e", "status": "SUCCESS", "error": None, "finished_at": NOW},
    ]

    def ids(**selectors):
        chosen = select_failed(
            rows,
            error_contains=selectors.get("error"),
            since=selectors.get("since"),
            workflow=selectors.get("workflow"),
        )
        return [r["id"] for r in chosen]

    assert ids() == ["a", "b", "c", "d"]
    assert ids(error="TIMEOUT") == ["a", "c", "d"]
    assert ids(error="timeout", since=NOW - timedelta(days=1)) == ["a", "c"]
    assert ids(error="timeout", workflow="default") == ["a", "d"]
    assert ids(workflow="t") == ["c"]
