"""Pure parts of the operator's view: honest pace and time left, and which Datastore the CLI
reads (options, shell and .env in that order)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from cli.render import follow, plain_line, safe
from cli.target import NoProject, resolve
from shared.core.progress import duration, finite, pace_since, progress

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
COUNTS = {"SUCCESS": 20, "FAILED": 0, "PROCESSING": 5, "PENDING": 5}


def test_a_batch_younger_than_the_window_is_paced_over_its_age():
    started = NOW - timedelta(seconds=11)
    since = pace_since(NOW, window=timedelta(minutes=5), batch_started=started)
    assert since == started
    p = progress(COUNTS, finished_recently=20, window_s=(NOW - since).total_seconds())
    assert p.rows_per_second == pytest.approx(20 / 11, rel=0.01)
    assert p.seconds_left == pytest.approx(10 / (20 / 11), rel=0.01)


def test_an_older_batch_is_paced_over_the_window():
    since = pace_since(NOW, window=timedelta(minutes=5), batch_started=NOW - timedelta(hours=1))
    assert since == NOW - timedelta(minutes=5)
    assert pace_since(NOW, window=timedelta(minutes=5), batch_started=None) == since


def test_time_left_waits_for_enough_evidence():
    assert progress(COUNTS, finished_recently=4, window_s=60).seconds_left is None
    assert progress(COUNTS, finished_recently=20, window_s=3).seconds_left is None
    assert progress(COUNTS, finished_recently=5, window_s=10).seconds_left == 20.0
    done = progress({"SUCCESS": 3}, finished_recently=0, window_s=300)
    assert done.seconds_left == 0.0


def test_odd_sums_from_hand_edited_rows_read_as_zero():
    p = progress(
        COUNTS,
        finished_recently=0,
        window_s=300,
        total_tokens=float("nan"),
        workflow_seconds=float("inf"),
    )
    assert (p.total_tokens, p.workflow_seconds) == (0, 0.0)
    assert finite("12") == 0.0
    assert finite(True) == 0.0
    assert duration(float("nan")) == "?"


def test_the_plain_line_says_estimating_until_it_can():
    line = plain_line(progress(COUNTS, finished_recently=1, window_s=5))
    assert line.endswith("left estimating…")


def test_safe_text_is_not_markup_and_has_no_control_characters():
    assert safe("[/]") == "\\[/]"
    assert safe("a\x1b[2Jb\x07c\x9bd\ne") == "a[2Jbcd\ne"


ENV_FILE = {
    "GOOGLE_CLOUD_PROJECT": "local-project",
    "DATASTORE_NAMESPACE": "",
    "DATASTORE_EMULATOR_HOST": "127.0.0.1:8081",
    "TASKS_QUEUE": "q",
    "TASKS_LOCATION": "asia-northeast3",
    "CLOUD_TASKS_EMULATOR_HOST": "127.0.0.1:8123",
}


def target(environ=None, dotenv=ENV_FILE, **options):
    base = {"project": None, "namespace": None, "mode": None, "queue": None, "location": None}
    return resolve(**{**base, **options}, shell=environ or {}, dotenv=dotenv)


def test_dotenv_alone_means_its_emulator_and_project():
    t = target()
    assert (t.project, t.emulator_host, t.why) == ("local-project", "127.0.0.1:8081", "from .env")
    assert (t.queue, t.tasks_emulator_host) == ("q", "127.0.0.1:8123")


def test_another_project_than_dotenv_means_real_datastore():
    t = target(project="prod-project")
    assert (t.project, t.emulator_host, t.queue) == ("prod-project", None, None)
    assert "real Datastore" in t.describe()


def test_cloud_and_emulator_choices_win():
    assert target(mode="cloud", project="local-project").emulator_host is None
    assert target(mode="emulator", dotenv={}, project="p").emulator_host == "127.0.0.1:8081"
    with pytest.raises(NoProject, match="--project"):
        target(mode="cloud")  # .env's project is the local stack's


def test_the_shell_wins_over_dotenv_and_an_empty_emulator_host_means_cloud():
    assert target(environ={"DATASTORE_EMULATOR_HOST": "127.0.0.2:1"}).emulator_host == "127.0.0.2:1"
    t = target(environ={"DATASTORE_EMULATOR_HOST": ""})
    assert (t.project, t.emulator_host) == ("local-project", None)


def test_no_project_anywhere():
    with pytest.raises(NoProject):
        target(dotenv={})


def test_the_plain_progress_line_never_wraps_in_a_narrow_log():
    out = io.StringIO()
    console = Console(file=out, width=40, force_terminal=False)
    done = progress({"SUCCESS": 1234, "FAILED": 5}, finished_recently=50, window_s=60)
    follow(lambda: done, console, interval=0)
    [line] = out.getvalue().splitlines()
    assert line == plain_line(done)
    assert len(line) > 40
