"""A local STAND-IN of Cloud Tasks v2 over gRPC (tests and demos only, never deployed).

Serves CreateTask, ListTasks, GetTask, DeleteTask, GetQueue, PauseQueue and ResumeQueue for
the real google-cloud-tasks client (point CLOUD_TASKS_EMULATOR_HOST at `host`). Every queue
name exists (RUNNING) until paused; a paused queue keeps its tasks and dispatches none, while
deliveries already under way finish, as in Cloud Tasks. It records every CreateTask, keeps
task names reserved after their task ends (as Cloud Tasks does for about an hour), adds
per-call latency, and answers scripted faults (ALREADY_EXISTS, UNAVAILABLE, ...).

With `dispatch=True` it also delivers tasks to their URL like a queue would: at most
`max_concurrent_dispatches` at once, deleting a task on 2xx and retrying others with
backoff (honouring Retry-After) up to `max_attempts`.

    python -m local.cloud_tasks_standin --port 8123 --dispatch --max-concurrent 5
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from google.cloud.tasks_v2.types import (
    CreateTaskRequest,
    DeleteTaskRequest,
    GetQueueRequest,
    GetTaskRequest,
    ListTasksRequest,
    ListTasksResponse,
    PauseQueueRequest,
    Queue,
    ResumeQueueRequest,
    Task,
)

from local.grpc_standin import serve


class _Empty:
    """google.protobuf.Empty on the wire: no bytes."""

    @staticmethod
    def serialize(message: object) -> bytes:
        return b""


@dataclass
class _Entry:
    task: Task
    due: float
    attempts: int = 0
    running: bool = False


@dataclass
class CloudTasksStandIn:
    latency: float = 0.0  # seconds added to every CreateTask, like a remote API
    dispatch: bool = False
    max_concurrent_dispatches: int = 5
    max_attempts: int = 5
    min_backoff: float = 0.2
    created: list[CreateTaskRequest] = field(default_factory=list)
    faults: deque[tuple[grpc.StatusCode, str]] = field(default_factory=deque)
    delivered: list[tuple[str, int]] = field(default_factory=list)  # (task name, HTTP status)
    peak_in_flight: int = 0
    paused: set[str] = field(default_factory=set)  # queue names
    # Per-queue max_concurrent_dispatches (queue id -> cap); others use the one above.
    queue_caps: dict[str, int] = field(default_factory=dict)
    peak_per_queue: dict[str, int] = field(default_factory=dict)
    first_dispatch_at: float | None = None  # time.monotonic() of the first delivery
    last_success_at: float | None = None  # ... and of the last 2xx answer
    _in_flight_per_queue: dict[str, int] = field(default_factory=dict)
    queue_calls: list[tuple[str, str]] = field(default_factory=list)  # (method, queue name)
    _tasks: dict[str, _Entry] = field(default_factory=dict)
    _ended: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _in_flight: int = 0
    _cleared: int = 0  # clear() count: a CreateTask still waiting out its latency is dropped
    _server: grpc.Server | None = None
    port: int = 0

    def start(self, port: int = 0) -> CloudTasksStandIn:
        self._server, self.port = serve(
            "google.cloud.tasks.v2.CloudTasks",
            {
                "CreateTask": (self._create, CreateTaskRequest, Task),
                "ListTasks": (self._list, ListTasksRequest, ListTasksResponse),
                "GetTask": (self._get, GetTaskRequest, Task),
                "DeleteTask": (self._delete, DeleteTaskRequest, _Empty),
                "GetQueue": (self._get_queue, GetQueueRequest, Queue),
                "PauseQueue": (self._pause_queue, PauseQueueRequest, Queue),
                "ResumeQueue": (self._resume_queue, ResumeQueueRequest, Queue),
            },
            port,
        )
        if self.dispatch:
            threading.Thread(target=self._dispatch_loop, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._server is not None:
            self._server.stop(grace=None)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- what tests look at and change --------------------------------------------------------

    def task_names(self) -> list[str]:
        with self._lock:
            return sorted(self._tasks)

    def created_bodies(self) -> list[bytes]:
        with self._lock:
            return [r.task.http_request.body for r in self.created]

    def fail_next(self, code: grpc.StatusCode, times: int = 1, message: str = "injected") -> None:
        with self._lock:
            self.faults.extend([(code, message)] * times)

    def lose(self, name: str, *, reserve_name: bool = True) -> None:
        """Make a task disappear as if the queue gave up on it (its name stays reserved)."""
        with self._lock:
            self._tasks.pop(name, None)
            if reserve_name:
                self._ended.add(name)

    def clear(self) -> None:
        """Forget every task, and drop CreateTask calls still waiting out their latency (a
        killed caller's calls never reach the queue)."""
        with self._lock:
            self._cleared += 1
            self._tasks.clear()
            self._ended.clear()
            self.created.clear()

    # -- the gRPC methods -----------------------------------------------------------------

    def _create(self, request: CreateTaskRequest, context: Any) -> Task:
        cleared = self._cleared
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            if self._cleared != cleared:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the stand-in was cleared meanwhile")
            self.created.append(request)
            if self.faults:
                code, message = self.faults.popleft()
                context.abort(code, message)
            task = Task(request.task)
            if not task.name:
                task.name = f"{request.parent}/tasks/auto-{len(self.created)}"
            if not task.name.startswith(request.parent + "/tasks/"):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "task name not in this queue")
            if task.name in self._tasks or task.name in self._ended:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")
            self._tasks[task.name] = _Entry(task, time.monotonic())
        self._wake.set()
        return task

    def _list(self, request: ListTasksRequest, context: Any) -> ListTasksResponse:
        with self._lock:
            names = sorted(n for n in self._tasks if n.startswith(request.parent + "/tasks/"))
            start = int(request.page_token or 0)
            size = request.page_size or 1000
            page = [self._tasks[n].task for n in names[start : start + size]]
        token = str(start + size) if start + size < len(names) else ""
        return ListTasksResponse(tasks=page, next_page_token=token)

    def _get(self, request: GetTaskRequest, context: Any) -> Task:
        with self._lock:
            entry = self._tasks.get(request.name)
        if entry is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "Requested entity was not found")
        assert entry is not None  # context.abort raised
        return entry.task

    def _delete(self, request: DeleteTaskRequest, context: Any) -> object:
        self.lose(request.name)
        return object()

    def _queue(self, name: str) -> Queue:
        state = Queue.State.PAUSED if name in self.paused else Queue.State.RUNNING
        return Queue(name=name, state=state)

    def _get_queue(self, request: GetQueueRequest, context: Any) -> Queue:
        with self._lock:
            self.queue_calls.append(("GetQueue", request.name))
            return self._queue(request.name)

    def _pause_queue(self, request: PauseQueueRequest, context: Any) -> Queue:
        with self._lock:
            self.queue_calls.append(("PauseQueue", request.name))
            self.paused.add(request.name)
            return self._queue(request.name)

    def _resume_queue(self, request: ResumeQueueRequest, context: Any) -> Queue:
        with self._lock:
            self.queue_calls.append(("ResumeQueue", request.name))
            self.paused.discard(request.name)
            queue = self._queue(request.name)
        self._wake.set()
        return queue

    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def calls_of(self, method: str) -> list[str]:
        with self._lock:
            return [name for m, name in self.queue_calls if m == method]

    # -- dispatching --------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        workers = self.max_concurrent_dispatches + sum(self.queue_caps.values())
        pool = ThreadPoolExecutor(max_workers=workers)
        http = httpx.Client()
        while not self._stopping.is_set():
            now = time.monotonic()
            with self._lock:
                free = (
                    self.max_concurrent_dispatches + sum(self.queue_caps.values()) - self._in_flight
                )
                due = [
                    e
                    for e in self._tasks.values()
                    if not e.running
                    and e.due <= now
                    and e.task.name.split("/tasks/")[0] not in self.paused
                ]
                due.sort(key=lambda e: e.due)
                for entry in due:
                    if free <= 0:
                        break
                    queue = entry.task.name.split("/")[5]
                    busy = self._in_flight_per_queue.get(queue, 0)
                    if busy >= self.queue_caps.get(queue, self.max_concurrent_dispatches):
                        continue
                    free -= 1
                    entry.running = True
                    self._in_flight += 1
                    self._in_flight_per_queue[queue] = busy + 1
                    self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
                    self.peak_per_queue[queue] = max(self.peak_per_queue.get(queue, 0), busy + 1)
                    pool.submit(self._deliver, http, entry)
            self._wake.wait(0.05)
            self._wake.clear()
        pool.shutdown(wait=False, cancel_futures=True)

    def _deliver(self, http: httpx.Client, entry: _Entry) -> None:
        request = entry.task.http_request
        deadline = entry.task.dispatch_deadline.total_seconds() or 600
        headers = {
            **dict(request.headers),
            "X-CloudTasks-TaskName": entry.task.name.rsplit("/", 1)[-1],
            "X-CloudTasks-TaskRetryCount": str(entry.attempts),
            "X-CloudTasks-QueueName": entry.task.name.split("/")[5],
        }
        retry_after: float | None = None
        with self._lock:
            if self.first_dispatch_at is None:
                self.first_dispatch_at = time.monotonic()
        try:
            response = http.post(
                request.url, content=request.body, headers=headers, timeout=deadline
            )
            status = response.status_code
            # Like Cloud Tasks: Retry-After counts only on 429 and 503.
            header = response.headers.get("retry-after", "")
            if status in (429, 503) and header.isascii() and header.isdigit():
                retry_after = float(header)
        except httpx.HTTPError:
            status = 0  # no answer: counts as a failed attempt
        with self._lock:
            self.delivered.append((entry.task.name, status))
            self._in_flight -= 1
            queue = entry.task.name.split("/")[5]
            self._in_flight_per_queue[queue] = self._in_flight_per_queue.get(queue, 1) - 1
            entry.running = False
            entry.attempts += 1
            if 200 <= status < 300:
                self.last_success_at = time.monotonic()
            if 200 <= status < 300 or entry.attempts >= self.max_attempts:
                self._tasks.pop(entry.task.name, None)
                self._ended.add(entry.task.name)
            else:
                backoff = self.min_backoff * 2 ** (entry.attempts - 1)
                entry.due = time.monotonic() + max(backoff, retry_after or 0)
        self._wake.set()


def main() -> None:
    parser = argparse.ArgumentParser(description="Local stand-in of Cloud Tasks v2 (gRPC)")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--dispatch", action="store_true", help="deliver tasks to their URLs")
    parser.add_argument("--max-concurrent", type=int, default=5)
    parser.add_argument("--max-attempts", type=int, default=5)
    args = parser.parse_args()
    stand_in = CloudTasksStandIn(
        dispatch=args.dispatch,
        max_concurrent_dispatches=args.max_concurrent,
        max_attempts=args.max_attempts,
    ).start(args.port)
    print(
        f"Cloud Tasks stand-in: CLOUD_TASKS_EMULATOR_HOST={stand_in.host}"
        f"{' (dispatching)' if args.dispatch else ''}",
        flush=True,
    )
    threading.Event().wait()


if __name__ == "__main__":
    main()
