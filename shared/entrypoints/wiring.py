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

from shared.adapters import logs
from shared.adapters.dify import WorkflowClient
from shared.adapters.secrets import ApiKey, SecretReader, checked_key
from shared.adapters.store import StatusStore
from shared.core.errors import ConfigError
from shared.core.spend import SpendLimits
from shared.core.workflows import (
    DEFAULT_NAME,
    Routing,
    Workflow,
    parse_input_columns,
    parse_workflows,
)
from shared.entrypoints.config import (
    MAX_DISPATCH_DEADLINE_S,
    CommonSettings,
    LoaderSettings,
    WorkerSettings,
    load,
    queue_path,
)
from shared.services.worker_service import WorkerService

if TYPE_CHECKING:
    from google.cloud import tasks_v2

    from shared.adapters.queue_control import QueueControl
    from shared.services.loader_service import LoaderService

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


def api_key_of(
    settings: CommonSettings, workflow: Workflow, *, setting: str = "DIFY_API_KEY_SECRET_ID"
) -> ApiKey:
    """The plain key locally; else the secret, read on first use and again after a 401."""
    if workflow.api_key is not None:
        plain = checked_key(workflow.api_key, source=f"workflow {workflow.name!r}")
        return ApiKey(read=lambda: plain)
    reader = secret_reader(settings)
    secret_id = str(workflow.api_key_secret_id)
    source = f"the secret {secret_id} ({setting})"
    return ApiKey(read=lambda: checked_key(reader.read(secret_id, setting=setting), source=source))


def routing(settings: WorkerSettings | LoaderSettings) -> Routing:
    """The workflows and how rows find theirs (WORKFLOWS, WORKFLOW_COLUMN, DEFAULT_WORKFLOW,
    INPUT_COLUMNS); without WORKFLOWS, the single-workflow settings as `default`."""
    input_columns = parse_input_columns(settings.input_columns)
    if not settings.workflows:
        if settings.workflow_column or settings.default_workflow:
            raise ConfigError("WORKFLOW_COLUMN and DEFAULT_WORKFLOW need WORKFLOWS")
        key = settings.dify_api_key.get_secret_value() if settings.dify_api_key else None
        single = Workflow(
            name=DEFAULT_NAME,
            endpoint=settings.dify_api_endpoint or "",
            api_key=key,
            api_key_secret_id=settings.dify_api_key_secret_id if key is None else None,
        )
        return Routing({DEFAULT_NAME: single}, input_columns=input_columns)
    workflows = parse_workflows(settings.workflows)
    if settings.default_workflow and settings.default_workflow not in workflows:
        raise ConfigError(
            f"DEFAULT_WORKFLOW {settings.default_workflow!r} is not in WORKFLOWS "
            f"({', '.join(workflows)})"
        )
    if len(workflows) > 1 and not settings.workflow_column:
        raise ConfigError("several WORKFLOWS need WORKFLOW_COLUMN: the header that picks one")
    for w in workflows.values():
        minutes = w.timeout_minutes or settings.dify_api_timeout_minutes
        if minutes * 60 + settings.timeout_margin_seconds > MAX_DISPATCH_DEADLINE_S:
            raise ConfigError(
                f"WORKFLOWS: workflow {w.name!r}: timeout_minutes plus TIMEOUT_MARGIN_SECONDS "
                f"passes Cloud Tasks' {MAX_DISPATCH_DEADLINE_S} s dispatch deadline"
            )
    return Routing(
        workflows,
        column=settings.workflow_column,
        default=settings.default_workflow
        or (next(iter(workflows)) if len(workflows) == 1 else None),
        input_columns=input_columns,
        multi=True,
    )


def spend_limits(settings: CommonSettings, routes: Routing) -> SpendLimits:
    """MAX_TOTAL_TOKENS and each workflow's `max_total_tokens` (0: none)."""
    return SpendLimits(
        total=settings.max_total_tokens,
        workflows={
            w.name: w.max_total_tokens for w in routes.workflows.values() if w.max_total_tokens
        },
    )


def timeout_of(settings: CommonSettings, workflow: Workflow) -> float:
    return (workflow.timeout_minutes or settings.dify_api_timeout_minutes) * 60


def http_client(concurrency: int) -> httpx.Client:
    """One pool for every Dify call of the instance, with a connection for each request the
    instance serves at once (plus the stop and lookup calls), so no run waits for one."""
    size = max(10, 2 * concurrency)
    return httpx.Client(limits=httpx.Limits(max_connections=size, max_keepalive_connections=size))


def _build_worker() -> WorkerService:
    settings = load(WorkerSettings)
    logs.configure(settings.log_level)
    routes = routing(settings)
    http = http_client(settings.threads)  # one pool, shared by every workflow's client
    clients: dict[str, WorkflowClient] = {}
    for workflow in routes.workflows.values():
        api_key = api_key_of(settings, workflow)
        api_key.get()  # a missing secret or denied access shows at the first request
        clients[workflow.name] = WorkflowClient(
            http=http,
            endpoint=workflow.endpoint,
            api_key=api_key,
            response_mode=workflow.response_mode or settings.dify_response_mode,
            user=settings.dify_user,
            timeout_s=timeout_of(settings, workflow),
            max_response_bytes=settings.dify_max_response_bytes,
        )
    store = status_store(settings)
    longest = max(c.timeout_s for c in clients.values())

    def queue(name: str) -> QueueControl | None:
        workflow = routes.workflows.get(name)
        queue_id = (workflow.queue if workflow else None) or settings.tasks_queue
        if settings.tasks_location is None or queue_id is None:
            return None
        path = queue_path(settings.google_cloud_project, settings.tasks_location, queue_id)
        return _once(
            f"worker_queue:{path}",
            lambda: queue_control(settings, settings.cloud_tasks_emulator_host, path, store),
        )

    return WorkerService(
        store=store,
        workflows=clients,
        default_workflow=routes.default or DEFAULT_NAME,
        max_attempts=settings.max_attempts,
        # The claim covers the longest workflow's run; each run ends by its own timeout.
        lease_seconds=longest + settings.timeout_margin_seconds,
        queue=queue,
        spend_limits=spend_limits(settings, routes),
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
    from shared.adapters.queue_control import QueueControl as Control

    return Control(
        client=tasks_client(emulator_host), datastore_client=store.client, queue_path=path
    )


def _build_loader() -> LoaderService:
    from shared.adapters.dify import FormClient
    from shared.adapters.sheet import SheetReader
    from shared.adapters.sheet_writer import SheetWriter
    from shared.adapters.tasks import TaskQueue
    from shared.core.rows import RowFilter
    from shared.core.write_back import ResultColumns, parse_result_columns
    from shared.services.loader_service import LoaderService, WriteBack

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
                id_column=settings.unique_id_column,
            ),
            columns=ResultColumns(
                mapping=parse_result_columns(settings.result_columns),
                status_header=settings.result_status_column,
                error_header=settings.result_error_column,
            ),
            sheet_key=sheet_key,
        )
    routes = routing(settings)
    input_forms = {}
    if settings.check_inputs:
        http = httpx.Client()
        input_forms = {
            w.name: FormClient(http=http, endpoint=w.endpoint, api_key=api_key_of(settings, w))
            for w in routes.workflows.values()
            if w.endpoint
        }
    queues = {
        w.name: (
            queue_path(settings.google_cloud_project, settings.tasks_location, w.queue),
            int(timeout_of(settings, w) + settings.timeout_margin_seconds),
        )
        for w in routes.workflows.values()
        if w.queue
    }
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
            workflow_queues=queues,
        ),
        id_column=settings.unique_id_column,
        row_filter=row_filter,
        namespace=settings.datastore_namespace,
        queue_control=queue_control(
            settings, settings.cloud_tasks_emulator_host, settings.queue_path, store
        ),
        other_queues={
            name: queue_control(settings, settings.cloud_tasks_emulator_host, path, store)
            for name, (path, _deadline) in queues.items()
            if path != settings.queue_path
        },
        write_back=write_back,
        input_forms=input_forms,
        routing=routes,
        sheet_key=sheet_key,
        spend_limits=spend_limits(settings, routes),
    )


def loader_service() -> LoaderService:
    return _once("loader", _build_loader)
