"""Builds the adapters and services once per function instance, from the settings.

The only module that knows how every piece is made; tests build the same services by
pointing the settings at the emulator and the local stand-ins.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import google.auth
import grpc
import httpx
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import datastore, secretmanager
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from shared import logs
from shared.config import CommonSettings, LoaderSettings, WorkerSettings, load
from shared.dify import WorkflowClient
from shared.errors import ConfigError
from shared.secrets import ApiKey, SecretReader, checked_key
from shared.store import StatusStore
from shared.worker_service import WorkerService

if TYPE_CHECKING:
    from google.cloud import tasks_v2

    from shared.loader_service import LoaderService
    from shared.queue_control import QueueControl

SHEETS_READ_SCOPES = ["https://www.googleapis.com/auth/spreadsheets.readonly"]
SHEETS_WRITE_SCOPES = ["https://www.googleapis.com/auth/spreadsheets"]  # WRITE_BACK=true


def sheets_scopes(settings: LoaderSettings) -> list[str]:
    return SHEETS_WRITE_SCOPES if settings.write_back else SHEETS_READ_SCOPES


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


def dify_api_key(settings: WorkerSettings | LoaderSettings) -> ApiKey:
    """The plain key locally; else the secret, read on first use and again after a 401."""
    if settings.dify_api_key is not None:
        plain = settings.dify_api_key.get_secret_value()
        return ApiKey(read=lambda: plain)
    reader = secret_reader(settings)
    secret_id = str(settings.dify_api_key_secret_id)
    source = f"the secret {secret_id} (DIFY_API_KEY_SECRET_ID)"
    return ApiKey(
        read=lambda: checked_key(
            reader.read(secret_id, setting="DIFY_API_KEY_SECRET_ID"), source=source
        )
    )


def http_client(concurrency: int) -> httpx.Client:
    """One pool for every Dify call of the instance, with a connection for each request the
    instance serves at once (plus the stop and lookup calls), so no run waits for one."""
    size = max(10, 2 * concurrency)
    return httpx.Client(limits=httpx.Limits(max_connections=size, max_keepalive_connections=size))


def _build_worker() -> WorkerService:
    settings = load(WorkerSettings)
    logs.configure(settings.log_level)
    api_key = dify_api_key(settings)
    api_key.get()  # a missing secret or denied access shows at the first request, not later
    workflow = WorkflowClient(
        http=http_client(settings.threads),
        endpoint=settings.dify_api_endpoint,
        api_key=api_key,
        response_mode=settings.dify_response_mode,
        user=settings.dify_user,
        timeout_s=settings.dify_timeout_seconds,
        max_response_bytes=settings.dify_max_response_bytes,
    )
    store = status_store(settings)
    path = settings.queue_path

    def queue() -> QueueControl | None:
        if path is None:
            return None
        return _once(
            "worker_queue",
            lambda: queue_control(settings, settings.cloud_tasks_emulator_host, path, store),
        )

    return WorkerService(
        store=store,
        workflow=workflow,
        max_attempts=settings.max_attempts,
        run_seconds=settings.dify_timeout_seconds,
        lease_seconds=settings.lease_seconds,
        queue=queue,
    )


def worker_service() -> WorkerService:
    return _once("worker", _build_worker)


# The loader's clients (Sheets, Cloud Tasks) are imported where they are built, so the worker,
# which never uses them, does not pay for them on every cold start.


def sheets_credentials(settings: LoaderSettings) -> Credentials:
    """A key from Secret Manager, else a key file, else (with a stand-in endpoint) none, else
    the function's own identity (ADC): the recommended way, since no key exists to leak."""
    from google.oauth2 import service_account

    try:
        if settings.google_sheets_credentials_secret_id:
            text = secret_reader(settings).read(
                settings.google_sheets_credentials_secret_id,
                setting="GOOGLE_SHEETS_CREDENTIALS_SECRET_ID",
            )
            return cast(
                Credentials,
                service_account.Credentials.from_service_account_info(
                    json.loads(text), scopes=sheets_scopes(settings)
                ),
            )
        if settings.google_sheets_credentials_file:
            return cast(
                Credentials,
                service_account.Credentials.from_service_account_file(
                    settings.google_sheets_credentials_file, scopes=sheets_scopes(settings)
                ),
            )
    except (ValueError, KeyError, OSError) as exc:
        source = (
            "GOOGLE_SHEETS_CREDENTIALS_SECRET_ID"
            if settings.google_sheets_credentials_secret_id
            else "GOOGLE_SHEETS_CREDENTIALS_FILE"
        )
        # The exception text could quote the key; name only its type.
        raise ConfigError(
            f"{source} does not hold a service-account key JSON ({type(exc).__name__}); "
            "download a JSON key for the service account, or unset it to use the function's "
            "own identity"
        ) from None
    if settings.sheets_api_endpoint:
        return AnonymousCredentials()
    credentials, _project = google.auth.default(scopes=sheets_scopes(settings))
    return credentials


def sheets_service(settings: LoaderSettings) -> Any:
    from googleapiclient.discovery import build

    options = (
        {"api_endpoint": settings.sheets_api_endpoint} if settings.sheets_api_endpoint else None
    )
    return build(
        "sheets",
        "v4",
        credentials=sheets_credentials(settings),
        client_options=options,
        cache_discovery=False,
        static_discovery=True,
    )


def tasks_client(emulator_host: str | None) -> tasks_v2.CloudTasksClient:
    from google.cloud import tasks_v2
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    if emulator_host:
        transport = CloudTasksGrpcTransport(
            channel=grpc.insecure_channel(emulator_host),
            credentials=AnonymousCredentials(),
        )
        return tasks_v2.CloudTasksClient(transport=transport)
    return tasks_v2.CloudTasksClient()


def queue_control(
    settings: CommonSettings, emulator_host: str | None, path: str, store: StatusStore
) -> QueueControl:
    from shared.queue_control import QueueControl as Control

    return Control(
        client=tasks_client(emulator_host), datastore_client=store.client, queue_path=path
    )


def _build_loader() -> LoaderService:
    from shared.dify import FormClient
    from shared.loader_service import LoaderService, WriteBack
    from shared.rows import RowFilter
    from shared.sheet import SheetReader
    from shared.sheet_writer import SheetWriter
    from shared.tasks import TaskQueue
    from shared.write_back import ResultColumns, parse_result_columns

    settings = load(LoaderSettings)
    logs.configure(settings.log_level)
    row_filter = None
    if settings.row_filter_column and settings.row_filter_value is not None:
        row_filter = RowFilter(settings.row_filter_column, settings.row_filter_value)
    store = status_store(settings)
    service = sheets_service(settings)
    sheet_key = f"{settings.spreadsheet_id}/{settings.sheet_name}"
    write_back = None
    if settings.write_back:
        write_back = WriteBack(
            writer=SheetWriter(
                service=service,
                spreadsheet_id=settings.spreadsheet_id,
                sheet_name=settings.sheet_name,
            ),
            columns=ResultColumns(
                mapping=parse_result_columns(settings.result_columns),
                status_header=settings.result_status_column,
                error_header=settings.result_error_column,
            ),
            sheet_key=sheet_key,
        )
    input_form = None
    if settings.check_inputs and settings.dify_api_endpoint:
        input_form = FormClient(
            http=httpx.Client(),
            endpoint=settings.dify_api_endpoint,
            api_key=dify_api_key(settings),
        )
    return LoaderService(
        sheet=SheetReader(
            service=service,
            spreadsheet_id=settings.spreadsheet_id,
            sheet_name=settings.sheet_name,
            chunk_rows=settings.sheet_chunk_rows,
        ),
        store=store,
        queue=TaskQueue(
            client=tasks_client(settings.cloud_tasks_emulator_host),
            queue_path=settings.queue_path,
            worker_url=settings.worker_url,
            service_account_email=settings.tasks_service_account_email,
            dispatch_deadline_s=settings.dispatch_deadline_seconds,
            concurrency=settings.enqueue_concurrency,
            namespace=settings.datastore_namespace,
        ),
        id_column=settings.unique_id_column,
        row_filter=row_filter,
        namespace=settings.datastore_namespace,
        queue_control=queue_control(
            settings, settings.cloud_tasks_emulator_host, settings.queue_path, store
        ),
        write_back=write_back,
        input_form=input_form,
        sheet_key=sheet_key,
    )


def loader_service() -> LoaderService:
    return _once("loader", _build_loader)
