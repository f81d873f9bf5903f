"""StatusStore: the only code that reads or writes the status entities in Datastore.

Every change to an entity that may already exist is a transaction that re-reads it and
checks it is still in the state the decision was based on. Production's Firestore in
Datastore mode locks pessimistically and aborts contended transactions, so transactions
are retried with backoff.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.cloud import datastore

from shared.claims import ClaimVerdict, decide_claim
from shared.errors import TransientError
from shared.model import KIND, NewRow, Status, StoredRow, Transition

T = TypeVar("T")
LOOKUP_BATCH = 1000  # Datastore's limit of keys per lookup
WRITE_BATCH = 500  # Datastore's limit of entities per commit
# Entity limit 1,048,572 bytes; keep room for the other properties and key.
ENTITY_LIMIT_BYTES = 1_048_572
_ENTITY_OVERHEAD_BYTES = 16 * 1024
# Long text must stay out of indexes (indexed strings are limited to 1,500 bytes).
UNINDEXED = ("inputs", "result", "error")

_RETRYABLE = (
    gexc.Aborted,
    gexc.Conflict,
    gexc.DeadlineExceeded,
    gexc.ServiceUnavailable,
    gexc.InternalServerError,
    gexc.TooManyRequests,
)


class KeyedLocks:
    """One in-process lock per key, forgotten once nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


def utcnow() -> datetime:
    return datetime.now(UTC)


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def result_budget_bytes(inputs_json: str) -> int:
    """How many bytes of result JSON fit in the entity beside its inputs."""
    return ENTITY_LIMIT_BYTES - _ENTITY_OVERHEAD_BYTES - len(inputs_json.encode())


@dataclass(frozen=True)
class Claim:
    verdict: ClaimVerdict
    row: StoredRow | None = None
    claim_id: str | None = None
    attempt: int = 0


def to_stored_row(entity: datastore.Entity) -> StoredRow:
    name = entity.key.name
    raw_inputs = entity.get("inputs")
    try:
        inputs = json.loads(raw_inputs) if raw_inputs else {}
    except ValueError:
        inputs = None
    return StoredRow(
        row_id=str(name),
        status=Status(entity.get("status", Status.PENDING)),
        attempts=int(entity.get("attempts") or 0),
        generation=int(entity.get("generation") or 0),
        inputs_hash=entity.get("inputs_hash"),
        lease_expires_at=entity.get("lease_expires_at"),
        claim_id=entity.get("claim_id"),
        error=entity.get("error"),
        inputs=inputs if isinstance(inputs, dict) else None,
    )


class StatusStore:
    def __init__(
        self,
        *,
        client: datastore.Client,
        clock: Callable[[], datetime] = utcnow,
        retry_timeout_s: float = 60.0,
    ) -> None:
        self._client = client
        self._clock = clock
        self._claiming = KeyedLocks()
        self._retry = Retry(
            predicate=if_exception_type(*_RETRYABLE),
            # Contended transactions that deadlock on a lock upgrade all abort together (the
            # emulator after ~2 s); starting the jitter wide keeps them from colliding again.
            initial=0.25,
            maximum=4.0,
            multiplier=2.0,
            timeout=retry_timeout_s,
        )

    @property
    def client(self) -> datastore.Client:
        return self._client

    def _key(self, row_id: str) -> datastore.Key:
        key: datastore.Key = self._client.key(KIND, row_id)
        return key

    def _retrying(self, fn: Callable[[], T]) -> T:
        try:
            return self._retry(fn)()
        except (gexc.RetryError, *_RETRYABLE) as exc:
            raise TransientError(
                f"Datastore stayed busy or unavailable: {type(exc).__name__}", code="datastore"
            ) from None

    def _in_transaction(self, work: Callable[[datastore.Transaction], T]) -> T:
        with self._client.transaction() as txn:
            return work(txn)

    def _transact(self, work: Callable[[datastore.Transaction], T]) -> T:
        return self._retrying(lambda: self._in_transaction(work))

    # -- the worker's side -------------------------------------------------------------------

    def claim(self, row_id: str, *, max_attempts: int, lease_seconds: float) -> Claim:
        """PENDING (or PROCESSING with an expired lease) -> PROCESSING, attempts + 1, new lease.

        Duplicate deliveries that reach the same instance wait for each other here rather than
        pile into Datastore lock waits. Each attempt then looks without a lock: a finished or
        running row ends there, and a retry after an aborted transaction that finds the row
        taken stops contending. Only a row that still looks claimable is re-read and changed
        in a transaction, which is what settles races between instances.
        """

        def look() -> Claim | None:
            entity = self._client.get(self._key(row_id))
            row = to_stored_row(entity) if entity is not None else None
            verdict = decide_claim(row, now=self._clock(), max_attempts=max_attempts)
            return None if verdict is ClaimVerdict.CLAIM else Claim(verdict, row)

        def work(txn: datastore.Transaction) -> Claim:
            entity = self._client.get(self._key(row_id), transaction=txn)
            row = to_stored_row(entity) if entity is not None else None
            now = self._clock()
            verdict = decide_claim(row, now=now, max_attempts=max_attempts)
            if verdict is not ClaimVerdict.CLAIM or entity is None or row is None:
                return Claim(verdict, row)
            claim_id = uuid.uuid4().hex
            entity.update(
                status=Status.PROCESSING.value,
                attempts=row.attempts + 1,
                claim_id=claim_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            txn.put(entity)
            return Claim(verdict, row, claim_id, row.attempts + 1)

        with self._claiming.hold(row_id):
            return self._retrying(lambda: look() or self._in_transaction(work))

    def finish(self, row_id: str, *, claim_id: str | None, changes: dict[str, Any]) -> bool:
        """Write a run's outcome if the row is still claimed by `claim_id` (None: not claimed,
        used to fail an exhausted row). Returns False when the claim was lost."""

        def work(txn: datastore.Transaction) -> bool:
            entity = self._client.get(self._key(row_id), transaction=txn)
            if entity is None:
                return False
            if claim_id is not None and (
                entity.get("status") != Status.PROCESSING or entity.get("claim_id") != claim_id
            ):
                return False
            if claim_id is None and entity.get("status") not in (Status.PENDING, Status.PROCESSING):
                return False
            entity.update(changes, claim_id=None, lease_expires_at=None, updated_at=self._clock())
            txn.put(entity)
            return True

        return self._transact(work)

    # -- the loader's side -------------------------------------------------------------------

    def get_many(self, row_ids: Sequence[str]) -> dict[str, StoredRow]:
        found: dict[str, StoredRow] = {}
        for batch in chunked(row_ids, LOOKUP_BATCH):
            keys = [self._key(row_id) for row_id in batch]
            entities: list[datastore.Entity] = self._retrying(
                lambda keys=keys: self._client.get_multi(keys)  # type: ignore[misc]
            )
            for entity in entities:
                row = to_stored_row(entity)
                found[row.row_id] = row
        return found

    def insert_new(self, rows: Sequence[NewRow]) -> list[str]:
        """Create PENDING entities for rows that have none; never overwrite one that exists
        (another loader run may have created it and a worker claimed it meanwhile)."""
        created: list[str] = []
        for batch in chunked(rows, WRITE_BATCH):

            def work(txn: datastore.Transaction, batch: Sequence[NewRow] = batch) -> list[str]:
                keys = [self._key(r.row_id) for r in batch]
                existing = {e.key.name for e in self._client.get_multi(keys, transaction=txn)}
                now = self._clock()
                fresh = [r for r in batch if r.row_id not in existing]
                for r in fresh:
                    txn.put(self._new_entity(r, now))
                return [r.row_id for r in fresh]

            created.extend(self._transact(work))
        return created

    def _new_entity(self, row: NewRow, now: datetime) -> datastore.Entity:
        entity = datastore.Entity(self._key(row.row_id), exclude_from_indexes=UNINDEXED)
        entity.update(
            status=Status.PENDING.value,
            inputs=json.dumps(row.inputs, ensure_ascii=False),
            inputs_hash=row.inputs_hash,
            row_number=row.row_number,
            result=None,
            error=None,
            attempts=0,
            generation=0,
            workflow_run_id=None,
            elapsed_time=None,
            total_tokens=None,
            lease_expires_at=None,
            claim_id=None,
            created_at=now,
            updated_at=now,
        )
        return entity

    def apply(self, transitions: Sequence[Transition]) -> list[str]:
        """Apply each transition whose row is still as expected; return the ids changed."""
        applied: list[str] = []
        for batch in chunked(transitions, WRITE_BATCH):

            def work(txn: datastore.Transaction, batch: Sequence[Transition] = batch) -> list[str]:
                by_id = {t.row_id: t for t in batch}
                entities = self._client.get_multi([self._key(i) for i in by_id], transaction=txn)
                now = self._clock()
                changed = []
                for entity in entities:
                    t = by_id[entity.key.name]
                    if not _still_as_expected(entity, t):
                        continue
                    entity.update(t.changes, updated_at=now)
                    changed.append(entity)
                for entity in changed:
                    txn.put(entity)
                return [e.key.name for e in changed]

            applied.extend(self._transact(work))
        return applied


def _still_as_expected(entity: datastore.Entity, t: Transition) -> bool:
    if entity.get("status") != t.expect_status or int(entity.get("generation") or 0) != (
        t.expect_generation
    ):
        return False
    if t.lease_expired_before is not None:
        lease = entity.get("lease_expires_at")
        return lease is None or lease <= t.lease_expired_before
    return True
