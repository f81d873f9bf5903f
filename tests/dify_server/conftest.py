"""The real-server tier: Dify 1.14.1's own API server (../shared/dify-server), started once per
session, with the test apps of its kit and ours (tests/dify_apps). Run with
`make test-dify-server`; `make test` leaves this tier out (pyproject's addopts)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.cloud_tasks_standin import CloudTasksStandIn
from local.sheets_standin import SheetsStandIn
from shared.adapters.queue_control import PAUSE_KIND
from shared.core.model import KIND
from tests.conftest import PROJECT
from tests.support.servers import ROOT, serve_loader_and_worker, wait_for

KIT = Path(os.environ.get("DIFY_SERVER_KIT") or ROOT.parent / "shared" / "dify-server")
OUR_APPS = ROOT / "tests" / "dify_apps"
HELPER = f"http://127.0.0.1:{os.environ.get('DIFY_HELPER_PORT', '18080')}"
FINISHED = {"SUCCESS", "FAILED"}
TIER_WAIT_S = 240.0  # Dify's own server is slower than the stand-in


@dataclass(frozen=True)
class DifyServer:
    url: str  # …/v1
    values: dict[str, str]

    @property
    def endpoint(self) -> str:
        return f"{self.url}/workflows/run"

    def key(self, app: str) -> str:
        return self.values[f"APP_KEY_{app.upper().replace('-', '_')}"]

    @contextmanager
    def limit(self, app: str, n: int) -> Iterator[None]:
        """The app's concurrency limit for the block, set back to none (0) after it. Only
        for our own apps: the kit's are shared with other sessions."""
        assert (OUR_APPS / f"{app}.yml").exists(), "change the limit of our own apps only"
        _limit(app, n)
        try:
            yield
        finally:
            _limit(app, 0)

    def runs(self, app: str, user: str) -> list[dict[str, Any]]:
        """The runs Dify started for `user` (its workflow logs; one entry per started run)."""
        answer = httpx.get(
            f"{self.url}/workflows/logs",
            params={"created_by_end_user_session_id": user, "limit": 100},
            headers={"Authorization": f"Bearer {self.key(app)}"},
            timeout=30,
        )
        answer.raise_for_status()
        return list(answer.json()["data"])


def _limit(app: str, n: int) -> None:
    subprocess.run([str(KIT / "limit"), app, str(n)], check=True, capture_output=True, timeout=60)


def _already_up() -> bool:
    port = os.environ.get("DIFY_SERVER_PORT", "5001")
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def dify_server() -> Iterator[DifyServer]:
    """Started once per session; stopped at its end only if this session started it (a server
    someone else runs is shared, as the kit asks), so a run leaves nothing behind."""
    if not (KIT / "start").exists():
        pytest.skip(
            f"Dify's server kit is not at {KIT} (set DIFY_SERVER_KIT to its folder): the "
            "real-server tier needs it"
        )
    was_up = _already_up()
    started = subprocess.run(
        [str(KIT / "start")],
        env={**os.environ, "DIFY_SERVER_APPS": str(OUR_APPS)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if started.returncode != 0:
        pytest.fail(f"Dify's server did not start:\n{started.stderr[-3000:]}")
    values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    for app in ("batch-slow",):  # a limit left behind by an interrupted run
        _limit(app, 0)
    yield DifyServer(url=values["DIFY_SERVER_URL"], values=values)
    if not was_up:
        subprocess.run([str(KIT / "stop")], capture_output=True, timeout=300, check=False)


def until_paused(queue: CloudTasksStandIn, _user: str) -> None:
    wait_for(lambda: bool(queue.paused) and not queue.in_flight(), TIER_WAIT_S)


@dataclass
class Batch:
    rows: dict[str, dict[str, Any]]  # row id -> entity
    summary: dict[str, Any]  # the loader's answer
    queue: CloudTasksStandIn
    user: str
    pause_notes: list[str]  # the reasons the worker paused the queue with (code: reason)


@pytest.fixture
def run_batch(
    monkeypatch: pytest.MonkeyPatch, namespace: str, ds_client: Any, dify_server: DifyServer
) -> Callable[..., Batch]:
    """Run a sheet through the real loader and worker (functions-framework over HTTP, the
    Sheets and Cloud Tasks stand-ins, the emulator) against Dify's own server."""

    def run(
        sheet: list[list[str]],
        *,
        app: str,
        mode: str = "streaming",
        cap: int = 4,
        endpoint: str | None = None,
        key: str | None = None,
        settle: Callable[[Counter[str]], bool] | None = None,
        during: Callable[[CloudTasksStandIn, str], None] | None = None,
        **settings: str,
    ) -> Batch:
        user = f"batch-test-{uuid.uuid4().hex[:10]}"
        sheets = SheetsStandIn({"book": {"Sheet1": sheet}}).start()
        # Deliveries Dify refuses for its concurrency limit are not charged to the row; the
        # deployed queue allows that many more deliveries (terraform's uncharged_deliveries).
        queue = CloudTasksStandIn(
            dispatch=True, max_concurrent_dispatches=cap, min_backoff=0.2, max_attempts=50
        )
        env = {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "DATASTORE_NAMESPACE": namespace,
            "DIFY_API_ENDPOINT": endpoint or dify_server.endpoint,
            "DIFY_API_KEY": key or dify_server.key(app),
            "DIFY_RESPONSE_MODE": mode,
            "DIFY_USER": user,
            "SPREADSHEET_ID": "book",
            "SHEET_NAME": "Sheet1",
            "SHEETS_API_ENDPOINT": sheets.endpoint,
            "TASKS_LOCATION": "asia-northeast3",
            "TASKS_QUEUE": "dify",
            **settings,
        }

        def statuses() -> Counter[str]:
            return Counter(e["status"] for e in ds_client.query(kind=KIND).fetch())

        try:
            queue.start()
            env["CLOUD_TASKS_EMULATOR_HOST"] = queue.host
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            with serve_loader_and_worker(monkeypatch) as loader_url:
                summary = httpx.post(loader_url, timeout=120).json()
                if during is not None:
                    during(queue, user)
                wait_for(
                    lambda: (
                        (settle or (lambda s: set(s) <= FINISHED))(statuses())
                        and not queue.in_flight()
                    ),
                    TIER_WAIT_S,
                )
        finally:
            queue.stop()
            sheets.stop()
        rows = {e.key.name: dict(e) for e in ds_client.query(kind=KIND).fetch()}
        notes = [
            f"{e.get('code')}: {e.get('reason')}" for e in ds_client.query(kind=PAUSE_KIND).fetch()
        ]
        return Batch(rows=rows, summary=summary, queue=queue, user=user, pause_notes=notes)

    return run
