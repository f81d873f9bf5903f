"""QueueControl: pauses, resumes and reads the state of one Cloud Tasks queue, and keeps the
reason for a pause in Datastore, where the loader and the operator's tools read it.

The worker pauses its queue when Dify fails every row the same way (a wrong key, a used-up
quota); only an operator resumes it, after fixing the cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import datastore, tasks_v2

from shared.core.errors import TransientError
from shared.core.outcomes import clip

PAUSE_KIND = "dify_batch_queue_pause"
_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class QueueState:
    queue: str  # projects/P/locations/L/queues/Q
    state: str  # RUNNING, PAUSED, DISABLED, or UNKNOWN when it could not be read
    reason: str | None = None  # why the worker paused it (while PAUSED)
    code: str | None = None
    paused_at: datetime | None = None
    error: str | None = None  # why the state could not be read

    @property
    def paused(self) -> bool:
        return self.state == "PAUSED"

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue.rsplit("/", 1)[-1],
            "state": self.state,
            "paused_reason": self.reason,
            "paused_code": self.code,
            "paused_at": self.paused_at.isoformat() if self.paused_at else None,
            **({"error": self.error} if self.error else {}),
        }


class QueueControl:
    def __init__(
        self,
        *,
        client: tasks_v2.CloudTasksClient,
        datastore_client: datastore.Client,
        queue_path: str,
    ) -> None:
        self._client = client
        self._ds = datastore_client
        self._queue = queue_path

    @property
    def queue_path(self) -> str:
        return self._queue

    def resume_hint(self) -> str:
        parts = self._queue.split("/")  # projects/P/locations/L/queues/Q
        project, location, queue = parts[1], parts[3], parts[5]
        return (
            "resume it with `dify-batch resume` (the loader option resume=true, which also "
            "checks the spend limit), or: gcloud tasks queues resume "
            f"{queue} --location {location} --project {project}"
        )

    def _note_key(self) -> datastore.Key:
        key: datastore.Key = self._ds.key(PAUSE_KIND, self._queue)
        return key

    def pause(self, *, code: str, reason: str, row_id: str) -> None:
        """Write why, then pause. Raises TransientError when Cloud Tasks refused."""
        note = datastore.Entity(self._note_key(), exclude_from_indexes=("reason",))
        note.update(code=code, reason=clip(reason), row_id=row_id, paused_at=datetime.now(UTC))
        try:
            self._ds.put(note)
            self._client.pause_queue(request={"name": self._queue}, timeout=_TIMEOUT_S)
        except gexc.GoogleAPICallError as exc:
            raise TransientError(
                f"could not pause {self._queue}: {type(exc).__name__}: {exc.message}",
                code="pause_failed",
            ) from None

    def resume(self) -> None:
        try:
            self._client.resume_queue(request={"name": self._queue}, timeout=_TIMEOUT_S)
            self._ds.delete(self._note_key())
        except gexc.GoogleAPICallError as exc:
            raise TransientError(
                f"could not resume {self._queue}: {type(exc).__name__}: {exc.message}",
                code="resume_failed",
            ) from None

    def state(self) -> QueueState:
        """The queue's state with the reason for a pause; UNKNOWN (with the error) when Cloud
        Tasks could not be asked, since a report should not fail for it."""
        try:
            queue = self._client.get_queue(request={"name": self._queue}, timeout=_TIMEOUT_S)
        except gexc.GoogleAPICallError as exc:
            return QueueState(self._queue, "UNKNOWN", error=f"{type(exc).__name__}: {exc.message}")
        state = tasks_v2.Queue.State(queue.state).name
        if state != "PAUSED":
            return QueueState(self._queue, state)
        note = self._ds.get(self._note_key())
        if note is None:
            return QueueState(self._queue, state, reason="paused outside this system")
        return QueueState(
            self._queue,
            state,
            reason=note.get("reason"),
            code=note.get("code"),
            paused_at=note.get("paused_at"),
        )
