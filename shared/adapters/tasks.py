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

from shared.core.errors import TransientError
from shared.core.planning import Enqueue, task_id

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
        workflow_queues: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        """`workflow_queues`: with several workflows, each one's (queue path, dispatch
        deadline); rows of other workflows ("") go to `queue_path`."""
        self._client = client
        self._queue = queue_path
        self._routes = workflow_queues or {}
        self._worker_url = worker_url
        self._service_account = service_account_email
        self._deadline = timedelta(seconds=dispatch_deadline_s)
        self._concurrency = concurrency
        self._namespace = namespace

    def _queue_of(self, workflow: str) -> tuple[str, timedelta]:
        path, deadline_s = self._routes.get(workflow, (self._queue, 0))
        return path, timedelta(seconds=deadline_s) if deadline_s else self._deadline

    def task_name(self, row_id: str, generation: int, workflow: str = "") -> str:
        path = self._queue_of(workflow)[0]
        return f"{path}/tasks/{task_id(self._namespace, row_id, generation)}"

    def live_task_ids(self) -> frozenset[str]:
        """Ids of every task still in the queue(s) (waiting, retrying or running)."""
        found: set[str] = set()
        for queue in sorted({self._queue, *(p for p, _ in self._routes.values())}):
            try:
                pages = self._client.list_tasks(
                    request={"parent": queue, "page_size": 1000}, retry=_CREATE_RETRY
                )
                found.update(t.name.rsplit("/", 1)[-1] for t in pages)
            except gexc.GoogleAPICallError as exc:
                raise TransientError(
                    f"cannot list the tasks of {queue}: {exc.message}", code="cloud_tasks"
                ) from None
        return frozenset(found)

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
            name=self.task_name(item.row_id, item.generation, item.workflow),
            http_request=request,
            dispatch_deadline=self._queue_of(item.workflow)[1],
        )

    def _create(self, item: Enqueue) -> tuple[Enqueue, str, str]:
        try:
            self._client.create_task(
                request={"parent": self._queue_of(item.workflow)[0], "task": self._task(item)},
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
