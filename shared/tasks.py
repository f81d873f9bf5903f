"""TaskQueue: creates one named Cloud Tasks HTTP task per row to process, and lists live ones."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.cloud import tasks_v2

from shared.errors import TransientError
from shared.planning import Enqueue, task_id

_CREATE_RETRY = Retry(
    predicate=if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded),
    initial=0.2,
    maximum=5.0,
    multiplier=2.0,
    timeout=60.0,
)


@dataclass
class EnqueueReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


class TaskQueue:
    def __init__(
        self,
        *,
        client: tasks_v2.CloudTasksClient,
        queue_path: str,
        worker_url: str,
        service_account_email: str | None,
        dispatch_deadline_s: int,
        concurrency: int,
        namespace: str | None,
    ) -> None:
        self._client = client
        self._queue = queue_path
        self._worker_url = worker_url
        self._service_account = service_account_email
        self._deadline = timedelta(seconds=dispatch_deadline_s)
        self._concurrency = concurrency
        self._namespace = namespace

    def task_name(self, row_id: str, generation: int) -> str:
        return f"{self._queue}/tasks/{task_id(self._namespace, row_id, generation)}"

    def live_task_ids(self) -> frozenset[str]:
        """Ids of every task still in the queue (waiting, retrying or running)."""
        try:
            pages = self._client.list_tasks(
                request={"parent": self._queue, "page_size": 1000}, retry=_CREATE_RETRY
            )
            return frozenset(t.name.rsplit("/", 1)[-1] for t in pages)
        except gexc.GoogleAPICallError as exc:
            raise TransientError(
                f"cannot list the tasks of {self._queue}: {exc.message}", code="cloud_tasks"
            ) from None

    def _task(self, item: Enqueue) -> tasks_v2.Task:
        request = tasks_v2.HttpRequest(
            http_method=tasks_v2.HttpMethod.POST,
            url=self._worker_url,
            headers={"Content-Type": "application/json"},
            body=json.dumps({"id": item.row_id}, ensure_ascii=False).encode(),
        )
        if self._service_account:
            request.oidc_token = tasks_v2.OidcToken(
                service_account_email=self._service_account, audience=self._worker_url
            )
        return tasks_v2.Task(
            name=self.task_name(item.row_id, item.generation),
            http_request=request,
            dispatch_deadline=self._deadline,
        )

    def _create(self, item: Enqueue) -> tuple[Enqueue, str, str]:
        try:
            self._client.create_task(
                request={"parent": self._queue, "task": self._task(item)},
                retry=_CREATE_RETRY,
                timeout=30.0,
            )
            return item, "created", ""
        except gexc.AlreadyExists:
            return item, "existing", ""
        except gexc.GoogleAPICallError as exc:
            return item, "error", f"{type(exc).__name__}: {exc.message}"
        except gexc.RetryError as exc:
            return item, "error", f"gave up retrying: {exc.cause!r}"

    def enqueue(self, items: Sequence[Enqueue]) -> EnqueueReport:
        """Create the tasks concurrently (Cloud Tasks has no batch call); ALREADY_EXISTS means a
        task of that name exists or ended within about an hour: already enqueued."""
        report = EnqueueReport()
        if not items:
            return report
        with ThreadPoolExecutor(max_workers=min(self._concurrency, len(items))) as pool:
            for item, result, error in pool.map(self._create, items):
                if result == "created":
                    report.created.append(item.row_id)
                elif result == "existing":
                    report.existing.append(item.row_id)
                else:
                    report.errors[item.row_id] = error
        return report
