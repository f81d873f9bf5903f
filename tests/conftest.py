"""Session-wide fixtures: one Firestore emulator (Datastore mode) per test session, one
Datastore namespace per test, and a clean environment for the settings."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from google.cloud import datastore

from local import emulator as emu
from shared.adapters.store import StatusStore
from shared.entrypoints import wiring

PROJECT = "dify-batch-test"
# Settings a developer's shell or .env could set; tests start without them.
SETTING_NAMES = [
    "GOOGLE_CLOUD_PROJECT",
    "DATASTORE_NAMESPACE",
    "DIFY_API_ENDPOINT",
    "DIFY_API_KEY",
    "DIFY_API_KEY_SECRET_ID",
    "DIFY_RESPONSE_MODE",
    "DIFY_API_TIMEOUT_MINUTES",
    "DIFY_USER",
    "DIFY_MAX_RESPONSE_BYTES",
    "TIMEOUT_MARGIN_SECONDS",
    "MAX_ATTEMPTS",
    "SECRET_MANAGER_EMULATOR_HOST",
    "LOG_LEVEL",
    "SPREADSHEET_ID",
    "SHEET_NAME",
    "UNIQUE_ID_COLUMN",
    "ROW_FILTER_COLUMN",
    "ROW_FILTER_VALUE",
    "GOOGLE_SHEETS_CREDENTIALS_SECRET_ID",
    "GOOGLE_SHEETS_CREDENTIALS_FILE",
    "SHEETS_API_ENDPOINT",
    "SHEET_CHUNK_ROWS",
    "TASKS_LOCATION",
    "TASKS_QUEUE",
    "WORKER_URL",
    "TASKS_SERVICE_ACCOUNT_EMAIL",
    "CLOUD_TASKS_EMULATOR_HOST",
    "ENQUEUE_CONCURRENCY",
    "THREADS",
    "WRITE_BACK",
    "RESULT_COLUMNS",
    "RESULT_STATUS_COLUMN",
    "RESULT_ERROR_COLUMN",
    "CHECK_INPUTS",
    "MAX_TOTAL_TOKENS",
    "LOADER_URL",
]


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:
    """No inherited settings, no developer .env (the settings read .env from the cwd)."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    wiring.reset()
    yield
    wiring.reset()


@pytest.fixture(scope="session")
def emulator_host() -> Iterator[str]:
    existing = os.environ.get("DATASTORE_EMULATOR_HOST")
    if existing:
        yield existing
        return
    try:
        running = emu.start()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    os.environ["DATASTORE_EMULATOR_HOST"] = running.host
    try:
        yield running.host
    finally:
        running.stop()
        os.environ.pop("DATASTORE_EMULATOR_HOST", None)


@pytest.fixture
def namespace(emulator_host: str) -> str:
    """A fresh Datastore namespace: tests never see each other's rows."""
    return f"t{uuid.uuid4().hex[:16]}"


@pytest.fixture
def ds_client(namespace: str) -> datastore.Client:
    return datastore.Client(project=PROJECT, namespace=namespace)


@pytest.fixture
def store(ds_client: datastore.Client) -> StatusStore:
    return StatusStore(client=ds_client)
