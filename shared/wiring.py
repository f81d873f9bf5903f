"""Builds the adapters and services once per function instance, from the settings.

The only module that knows how every piece is made; tests build the same services by
pointing the settings at the emulator and the local stand-ins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import grpc
import httpx
from google.auth.credentials import AnonymousCredentials
from google.cloud import datastore, secretmanager
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from shared import logs
from shared.config import CommonSettings, WorkerSettings, load
from shared.dify import WorkflowClient
from shared.secrets import SecretReader
from shared.store import StatusStore
from shared.worker_service import WorkerService

T = TypeVar("T")
_lock = threading.Lock()
_built: dict[str, object] = {}


def _once(name: str, build: Callable[[], T]) -> T:
    """Build `name` on first use, once even when the first requests arrive together."""
    with _lock:
        if name not in _built:
            _built[name] = build()
        return _built[name]  # type: ignore[return-value]


def reset() -> None:
    """Forget everything built (tests change the settings between cases)."""
    with _lock:
        _built.clear()


def status_store(settings: CommonSettings) -> StatusStore:
    # With DATASTORE_EMULATOR_HOST set, the client talks to the emulator by itself.
    client = datastore.Client(
        project=settings.google_cloud_project, namespace=settings.datastore_namespace
    )
    return StatusStore(client=client)


def secret_reader(settings: CommonSettings) -> SecretReader:
    if settings.secret_manager_emulator_host:
        transport = SecretManagerServiceGrpcTransport(
            channel=grpc.insecure_channel(settings.secret_manager_emulator_host),
            credentials=AnonymousCredentials(),
        )
        client = secretmanager.SecretManagerServiceClient(transport=transport)
    else:
        client = secretmanager.SecretManagerServiceClient()
    return SecretReader(client=client, project=settings.google_cloud_project)


def _build_worker() -> WorkerService:
    settings = load(WorkerSettings)
    logs.configure(settings.log_level)
    if settings.dify_api_key is not None:
        api_key = settings.dify_api_key.get_secret_value()
    else:
        api_key = secret_reader(settings).read(
            str(settings.dify_api_key_secret_id), setting="DIFY_API_KEY_SECRET_ID"
        )
    workflow = WorkflowClient(
        http=httpx.Client(limits=httpx.Limits(max_connections=200, max_keepalive_connections=50)),
        endpoint=settings.dify_api_endpoint,
        api_key=api_key,
        response_mode=settings.dify_response_mode,
        user=settings.dify_user,
        timeout_s=settings.dify_timeout_seconds,
        max_response_bytes=settings.dify_max_response_bytes,
    )
    return WorkerService(
        store=status_store(settings),
        workflow=workflow,
        max_attempts=settings.max_attempts,
        lease_seconds=settings.lease_seconds,
    )


def worker_service() -> WorkerService:
    return _once("worker", _build_worker)
