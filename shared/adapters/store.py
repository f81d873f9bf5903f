"""StatusStore: the only code that reads or writes the status entities in Datastore.

Every change to an entity that may already exist is a transaction that re-reads it and
checks it is still in the state the decision was based on. Production's Firestore in
Datastore mode locks pessimistically and aborts contended transactions, so transactions
are retried with backoff.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import datastore

from shared.core.claims import ClaimVerdict, decide_claim
from shared.core.errors import PermanentError, TransientError
from shared.core.model import KIND, NewRow, Status, StoredRow, Transition
from shared.core.outcomes import clip
from shared.core.progress import finite, pace_since
from shared.core.write_back import Finished

T = TypeVar("T")
LOOKUP_BATCH = 1000  # Datastore's limit of keys per lookup
WRITE_BATCH = 500  # Datastore's limit of entities per commit
# Bytes per commit: production takes 10 MiB, the Firestore emulator refuses gRPC messages over
# 4 MiB; stay under both with room for keys and properties.
COMMIT_BYTES = 3 * 1024 * 1024
_ROW_OVERHEAD_BYTES = 1024
# Entity limit 1,048,572 bytes; keep room for the other properties and key.
ENTITY_LIMIT_BYTES = 1_048_572
_ENTITY_OVERHEAD_BYTES = 16 * 1024
COLUMNS_KIND = "dify_batch_result_columns"  # per sheet: the result headers write-back added
RUNS_KIND = "dify_batch_loader_runs"  # per sheet: when the loader last ran
# The sheet rows the last loader run did not store (an empty or repeated id, an unroutable
# kind...), with why, so `export` holds every sheet row. At most this many are kept.
NOT_RUN_KIND = "dify_batch_rows_not_run"
MAX_NOT_RUN = 10_000

# The spend counter: tokens charged by finished rows, per workflow, spread over shards. Every
# finish at the queue's concurrency adds to it; one entity would take them all in turn (a
# Datastore entity sustains about one write a second), so each finish adds to one shard of
# SPEND_SHARDS, picked at random, and a total is one small query over the shards.
SPEND_KIND = "dify_batch_spend"
SPEND_SHARDS = 20

DIGEST_KIND = "dify_batch_loader_digest"  # per sheet: the finished rows the loader last saw
_DIGEST_CHUNK_BYTES = 512 * 1024  # one digest entity's rows (the entity limit is 1 MiB)
_DIGEST_CHUNK_ROWS = 5000
# Chunks per lookup: an answer must stay under the emulator's 4 MiB gRPC messages.
_DIGEST_CHUNKS_PER_LOOKUP = 4
FINISHED_PAGE = 1000  # rows per page of the finished-since query
# Long text must stay out of indexes (indexed strings are limited to 1,500 bytes).
UNINDEXED = ("inputs", "result", "error", "last_error")

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


class DatastoreWork:
    """What the loader's side of the store asked of Datastore, for the run's summary: keys
    looked up and entities a query returned (`entities_read`: what Datastore bills as entity
    reads), entities put (`entities_written`), queries run, and keys returned by keys-only
    queries (`keys_read`: billed as index entries, one read per batch of up to 1,000). Counted
    on every attempt, so a retried transaction shows its real cost. Thread-safe; cumulative,
    read with `snapshot()`."""

    FIELDS = ("entities_read", "entities_written", "queries", "keys_read")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.FIELDS, 0)

    def add(self, *, read: int = 0, written: int = 0, queries: int = 0, keys: int = 0) -> None:
        with self._lock:
            self._counts["entities_read"] += read
            self._counts["entities_written"] += written
            self._counts["queries"] += queries
            self._counts["keys_read"] += keys

    def query_read(self, entities: int) -> None:
        """One query made, and the entities it returned."""
        self.add(read=entities, queries=1)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def since(self, before: dict[str, int]) -> dict[str, int]:
        now = self.snapshot()
        return {k: now[k] - before.get(k, 0) for k in self.FIELDS}


def utcnow() -> datetime:
    return datetime.now(UTC)


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def batched_by_size(
    items: Sequence[T], *, size_of: Callable[[T], int], count: int, max_bytes: int
) -> Iterator[Sequence[T]]:
    """Consecutive batches of at most `count` items and `max_bytes` bytes (an item larger than
    `max_bytes` goes alone)."""
    start, total = 0, 0
    for index, item in enumerate(items):
        size = size_of(item)
        if index > start and (index - start >= count or total + size > max_bytes):
            yield items[start:index]
            start, total = index, 0
        total += size
    if start < len(items):
        yield items[start:]


class PartialWrite(Exception):
    """A batch failed after earlier ones were committed: `done` holds their ids."""

    def __init__(self, done: list[str], error: TransientError) -> None:
        super().__init__(error.describe())
        self.done = done
        self.error = error


def result_budget_bytes(inputs_json: str) -> int:
    """How many bytes of result JSON fit in the entity beside its inputs."""
    return ENTITY_LIMIT_BYTES - _ENTITY_OVERHEAD_BYTES - len(inputs_json.encode())


@dataclass(frozen=True)
class Claim:
    verdict: ClaimVerdict
    row: StoredRow | None = None
    claim_id: str | None = None
    attempt: int = 0
    detail: str = ""


class BadEntity(Exception):
    """An entity this code cannot read as a status row (edited by hand, say)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def to_stored_row(entity: datastore.Entity) -> StoredRow:
    name = entity.key.name
    raw_status = entity.get("status", Status.PENDING)
    try:
        status = Status(raw_status)
    except ValueError:
        raise BadEntity(
            f"its status {clip(repr(raw_status))} is not one of "
            f"{', '.join(s.value for s in Status)} (edited by hand?): set it to one of them, "
            "or delete the entity and run the loader again"
        ) from None
    raw_inputs = entity.get("inputs")
    try:
        inputs = json.loads(raw_inputs) if raw_inputs else {}
    except ValueError:
        inputs = None
    return StoredRow(
        row_id=str(name),
        status=status,
        attempts=int(entity.get("attempts") or 0),
        generation=int(entity.get("generation") or 0),
        inputs_hash=entity.get("inputs_hash"),
        lease_expires_at=entity.get("lease_expires_at"),
        claim_id=entity.get("claim_id"),
        error=entity.get("error"),
        inputs=inputs if isinstance(inputs, dict) else None,
        workflow=entity.get("workflow"),
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
        self.work = DatastoreWork()  # the loader's side only: the worker's path stays as lean
        self._retry = Retry(
            # A message too large for the server fails again the same way: not retried here.
            predicate=lambda exc: isinstance(exc, _RETRYABLE) and not _too_large(exc),
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

    def key(self, row_id: str) -> datastore.Key:
        key: datastore.Key = self._client.key(KIND, row_id)
        return key

    def _retrying(self, fn: Callable[[], T], *, timeout: float | None = None) -> T:
        retry = self._retry if timeout is None else self._retry.with_timeout(max(0.1, timeout))
        try:
            return retry(fn)()
        except (gexc.RetryError, *_RETRYABLE) as exc:
            if _too_large(exc):
                raise
            raise TransientError(
                f"Datastore stayed busy or unavailable: {type(exc).__name__}", code="datastore"
            ) from None

    def _in_transaction(self, work: Callable[[datastore.Transaction], T]) -> T:
        with self._client.transaction() as txn:
            return work(txn)

    def _transact(
        self, work: Callable[[datastore.Transaction], T], *, timeout: float | None = None
    ) -> T:
        return self._retrying(lambda: self._in_transaction(work), timeout=timeout)

    # -- the worker's side -------------------------------------------------------------------

    def claim(self, row_id: str, *, max_attempts: int, lease_seconds: float) -> Claim:
        """PENDING (or PROCESSING with an expired lease) -> PROCESSING, attempts + 1, new lease.

        Duplicate deliveries that reach the same instance wait for each other here rather than
        pile into Datastore lock waits. The first attempt goes straight to the transaction (the
        common case, one delivery of a PENDING row, costs no extra round trip); the transaction
        re-reads the row and settles races between instances. Each retry after an aborted
        transaction first looks without a lock: a finished or running row ends there, so a
        delivery that finds the row taken stops contending.
        """

        def look() -> Claim | None:
            entity = self._client.get(self.key(row_id))
            try:
                row = to_stored_row(entity) if entity is not None else None
            except BadEntity as bad:
                return Claim(ClaimVerdict.BAD_ENTITY, detail=f"row {row_id}: {bad.reason}")
            verdict = decide_claim(row, now=self._clock(), max_attempts=max_attempts)
            return None if verdict is ClaimVerdict.CLAIM else Claim(verdict, row)

        def work(txn: datastore.Transaction) -> Claim:
            entity = self._client.get(self.key(row_id), transaction=txn)
            try:
                row = to_stored_row(entity) if entity is not None else None
            except BadEntity as bad:
                return Claim(ClaimVerdict.BAD_ENTITY, detail=f"row {row_id}: {bad.reason}")
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

        tries = 0

        def attempt() -> Claim:
            nonlocal tries
            tries += 1
            return (look() if tries > 1 else None) or self._in_transaction(work)

        with self._claiming.hold(row_id):
            return self._retrying(attempt)

    def finish(
        self,
        row_id: str,
        *,
        claim_id: str | None,
        changes: dict[str, Any],
        retry_for: float | None = None,
        charge_tokens: bool = False,
    ) -> bool:
        """Write a run's outcome if the row is still claimed by `claim_id` (None: not claimed,
        used to fail an exhausted row). Returns False when the claim was lost. With
        `charge_tokens` (a spend limit is set) the run's tokens go to the spend counter in the
        same transaction.

        Busy or unavailable Datastore is retried for `retry_for` seconds (the claim's lease
        left): TransientError after that. A value Datastore refuses raises PermanentError.
        """

        tokens = int(changes.get("total_tokens") or 0) if charge_tokens else 0

        def work(txn: datastore.Transaction) -> bool:
            # A finished run's tokens go to the spend counter in the same transaction as its
            # outcome, read in the same lookup: charged exactly when the outcome is written.
            shard = None
            if tokens:  # a random shard spreads the writes; nothing secret about it
                shard = self._spend_shard_key(random.randrange(SPEND_SHARDS))  # noqa: S311
            found = {
                e.key.kind: e
                for e in self._client.get_multi(
                    [self.key(row_id), *([shard] if shard else [])], transaction=txn
                )
            }
            entity = found.get(KIND)
            if entity is None:
                return False
            if claim_id is not None and (
                entity.get("status") != Status.PROCESSING or entity.get("claim_id") != claim_id
            ):
                return False
            if claim_id is None and entity.get("status") not in (Status.PENDING, Status.PROCESSING):
                return False
            entity.update(changes, claim_id=None, lease_expires_at=None, updated_at=self._clock())
            entity.exclude_from_indexes.update(k for k in changes if k in UNINDEXED)
            txn.put(entity)
            if shard is not None:
                counter = found.get(SPEND_KIND) or datastore.Entity(shard)
                name = f"w:{entity.get('workflow') or ''}"  # one property per workflow
                counter[name] = int(counter.get(name) or 0) + tokens
                counter.exclude_from_indexes = set(counter.keys())
                txn.put(counter)
            return True

        try:
            return self._transact(work, timeout=retry_for)
        except (gexc.GoogleAPICallError, ValueError, TypeError, OverflowError) as exc:
            # Refused for good (too large, a value it cannot encode): the same write fails
            # again, so say so instead of retrying.
            raise PermanentError(
                f"Datastore refused the outcome: {type(exc).__name__}: {clip(str(exc))}",
                code="not_storable",
            ) from None

    def _spend_shard_key(self, shard: int) -> datastore.Key:
        key: datastore.Key = self._client.key(SPEND_KIND, f"{shard:02d}")
        return key

    def spend_totals(self) -> dict[str, int]:
        """Tokens charged so far, per workflow ("" for rows that name none)."""
        return self._retrying(lambda: spend_totals(self._client))

    # -- the loader's side -------------------------------------------------------------------

    def get_many(self, row_ids: Sequence[str]) -> dict[str, StoredRow]:
        return self.get_many_checked(row_ids)[0]

    def get_many_checked(
        self, row_ids: Sequence[str]
    ) -> tuple[dict[str, StoredRow], dict[str, str]]:
        """The rows found, and the ids of entities that cannot be read with the reason."""
        found: dict[str, StoredRow] = {}
        bad: dict[str, str] = {}
        for batch in chunked(row_ids, LOOKUP_BATCH):
            keys = [self.key(row_id) for row_id in batch]
            entities: list[datastore.Entity] = self._retrying(
                lambda keys=keys: self._client.get_multi(keys)  # type: ignore[misc]
            )
            self.work.add(read=len(keys))
            for entity in entities:
                try:
                    row = to_stored_row(entity)
                except BadEntity as problem:
                    bad[str(entity.key.name)] = problem.reason
                    continue
                found[row.row_id] = row
        return found, bad

    def insert_new(self, rows: Sequence[NewRow]) -> list[str]:
        """Create PENDING entities for rows that have none; never overwrite one that exists
        (another loader run may have created it and a worker claimed it meanwhile)."""
        created: list[str] = []
        for batch in batched_by_size(
            rows,
            size_of=lambda r: (
                len(json.dumps(r.inputs, ensure_ascii=False).encode()) + _ROW_OVERHEAD_BYTES
            ),
            count=WRITE_BATCH,
            max_bytes=COMMIT_BYTES,
        ):

            def work(txn: datastore.Transaction, batch: Sequence[NewRow] = batch) -> list[str]:
                keys = [self.key(r.row_id) for r in batch]
                existing = {e.key.name for e in self._client.get_multi(keys, transaction=txn)}
                now = self._clock()
                fresh = [r for r in batch if r.row_id not in existing]
                for r in fresh:
                    txn.put(self._new_entity(r, now))
                self.work.add(read=len(keys), written=len(fresh))
                return [r.row_id for r in fresh]

            try:
                created.extend(self._transact(work))
            except TransientError as exc:
                raise PartialWrite(created, exc) from None
        return created

    def _new_entity(self, row: NewRow, now: datetime) -> datastore.Entity:
        entity = datastore.Entity(self.key(row.row_id), exclude_from_indexes=UNINDEXED)
        failed = row.error is not None
        entity.update(
            status=(Status.FAILED if failed else Status.PENDING).value,
            inputs=json.dumps(row.inputs, ensure_ascii=False),
            inputs_hash=row.inputs_hash,
            row_number=row.row_number,
            result=None,
            error=row.error,
            workflow=row.workflow or None,
            finished_at=now if failed else None,
            write_pending=failed,
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
        for batch in batched_by_size(
            transitions,
            size_of=lambda t: (
                sum(len(str(v).encode()) for v in t.changes.values()) + _ROW_OVERHEAD_BYTES
            ),
            count=WRITE_BATCH,
            max_bytes=COMMIT_BYTES,
        ):

            def work(txn: datastore.Transaction, batch: Sequence[Transition] = batch) -> list[str]:
                by_id = {t.row_id: t for t in batch}
                entities = self._client.get_multi([self.key(i) for i in by_id], transaction=txn)
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
                self.work.add(read=len(by_id), written=len(changed))
                return [e.key.name for e in changed]

            try:
                applied.extend(self._transact(work))
            except TransientError as exc:
                raise PartialWrite(applied, exc) from None
        return applied

    # -- the write-back's side ----------------------------------------------------------------

    def pending_write_pages(self) -> Iterator[list[Finished]]:
        """Finished rows whose outcome is not in the sheet yet, a page at a time (pages bounded
        by bytes as well as count): an equality query on one indexed property
        (`write_pending`), not a read of every entity."""
        query = self._client.query(kind=KIND)
        query.add_filter(filter=datastore.query.PropertyFilter("write_pending", "=", True))
        for page in fetch_pages(
            query,
            page_size=PENDING_PAGE_ROWS,
            retrying=self._retrying,
            counted=self.work.query_read,
        ):
            yield [_finished(entity) for entity in page]

    def pending_writes(self) -> list[Finished]:
        return [row for page in self.pending_write_pages() for row in page]

    def mark_written(self, rows: Sequence[Finished]) -> None:
        """Done with these rows' outcomes, unless a row finished again meanwhile (a re-run):
        then its new outcome stays pending."""
        for batch in chunked(rows, WRITE_BATCH):

            def work(txn: datastore.Transaction, batch: Sequence[Finished] = batch) -> None:
                wanted = {r.row_id: r.finished_at for r in batch}
                entities = self._client.get_multi([self.key(i) for i in wanted], transaction=txn)
                written = 0
                for entity in entities:
                    if entity.get("finished_at") == wanted[entity.key.name]:
                        entity.update(write_pending=False)
                        txn.put(entity)
                        written += 1
                self.work.add(read=len(wanted), written=written)

            self._transact(work)

    def write_again(self, row_ids: Sequence[str]) -> None:
        """Finished rows whose cells in the sheet may hold another row's result (a sort landed
        inside a write): their own outcome is written again next run."""
        for batch in chunked(list(dict.fromkeys(row_ids)), WRITE_BATCH):

            def work(txn: datastore.Transaction, batch: Sequence[str] = batch) -> None:
                entities = self._client.get_multi([self.key(i) for i in batch], transaction=txn)
                for entity in entities:
                    if entity.get("status") in (Status.SUCCESS, Status.FAILED):
                        entity.update(write_pending=True)
                        txn.put(entity)

            self._transact(work)

    def record_not_run(self, rows: Sequence[dict[str, Any]]) -> None:
        """Replace the record of sheet rows the loader did not store: each a dict of
        `row_number`, `row_id`, `status` and `reason` (the newest run's view wins)."""
        try:
            self._record_not_run(rows)
        except (gexc.GoogleAPICallError, ValueError) as exc:
            raise PermanentError(
                f"Datastore refused the rows not run: {type(exc).__name__}", code="datastore"
            ) from None

    def _record_not_run(self, rows: Sequence[dict[str, Any]]) -> None:
        query = self._client.query(kind=NOT_RUN_KIND)
        query.keys_only()
        old = [e.key for page in fetch_pages(query, page_size=1000) for e in page]
        for keys in chunked(old, WRITE_BATCH):
            self._retrying(lambda keys=keys: self._client.delete_multi(keys))  # type: ignore[misc]
        entities = []
        for row in rows[:MAX_NOT_RUN]:
            entity = datastore.Entity(
                self._client.key(NOT_RUN_KIND, f"{int(row['row_number']):09d}"),
                exclude_from_indexes=("reason", "row_id"),
            )
            entity.update(
                row_number=int(row["row_number"]),
                # Cells can hold what Datastore refuses (half an emoji): stored as readable text.
                **{k: _storable_text(row.get(k)) for k in ("row_id", "status", "reason")},
            )
            entities.append(entity)
        for batch in chunked(entities, WRITE_BATCH):
            self._retrying(lambda batch=batch: self._client.put_multi(batch))  # type: ignore[misc]

    def result_headers(self, sheet: str) -> list[str]:
        """Headers an earlier write-back added to `sheet`: result columns, never inputs."""
        entity = self._retrying(lambda: self._client.get(self._client.key(COLUMNS_KIND, sheet)))
        self.work.add(read=1)
        return list(entity.get("headers") or []) if entity is not None else []

    def remember_result_headers(self, sheet: str, headers: Sequence[str]) -> None:
        if not headers:
            return
        known = self.result_headers(sheet)
        entity = datastore.Entity(self._client.key(COLUMNS_KIND, sheet))
        entity.update(headers=[*known, *(h for h in headers if h not in known)])
        self._retrying(lambda: self._client.put(entity))
        self.work.add(written=1)

    def finished_since(self, since: datetime) -> list[dict[str, Any]]:
        """Status, tokens and time of the rows finished since `since` (one property's range:
        the built-in index serves it)."""
        query = self._client.query(kind=KIND)
        query.add_filter(filter=datastore.query.PropertyFilter("finished_at", ">=", since))
        found: list[dict[str, Any]] = []
        for page in fetch_pages(
            query, page_size=FINISHED_PAGE, retrying=self._retrying, counted=self.work.query_read
        ):
            found.extend(
                {k: e.get(k) for k in ("status", "total_tokens", "elapsed_time")} for e in page
            )
        return found

    def last_run(self, sheet: str) -> datetime | None:
        entity = self._retrying(lambda: self._client.get(self._client.key(RUNS_KIND, sheet)))
        self.work.add(read=1)
        return entity.get("at") if entity is not None else None

    def note_run(self, sheet: str, at: datetime) -> None:
        entity = datastore.Entity(self._client.key(RUNS_KIND, sheet))
        entity.update(at=at)
        self._retrying(lambda: self._client.put(entity))
        self.work.add(written=1)

    def _keys_where(self, status: Status) -> set[str]:
        query = self._client.query(kind=KIND)
        query.add_filter(filter=datastore.query.PropertyFilter("status", "=", status.value))
        query.keys_only()
        keys = self._retrying(lambda: [e.key.name for e in query.fetch()])
        self.work.add(queries=1, keys=len(keys))
        return {str(k) for k in keys}

    def unfinished_ids(self) -> set[str]:
        """Ids of every PENDING or PROCESSING row, whatever set it so (a worker, the loader, a
        hand edit): keys-only equality queries on the built-in index, billed by index entries,
        not per entity."""
        return self._keys_where(Status.PENDING) | self._keys_where(Status.PROCESSING)

    def failed_ids(self) -> set[str]:
        """Ids of every FAILED row (keys-only, as unfinished_ids)."""
        return self._keys_where(Status.FAILED)

    def read_digest(self, sheet: str) -> dict[str, tuple[str, str]]:
        """The finished rows the loader saw last run on `sheet`: row id -> (stored inputs_hash,
        status). Empty when there is none or it cannot be read (then every row is looked up)."""
        head = self._retrying(lambda: self._client.get(self._client.key(DIGEST_KIND, sheet)))
        self.work.add(read=1)
        chunks = int(head.get("chunks") or 0) if head is not None else 0
        keys = [self._client.key(DIGEST_KIND, f"{sheet}#{i}") for i in range(chunks)]
        found: dict[str, tuple[str, str]] = {}
        for batch in chunked(keys, _DIGEST_CHUNKS_PER_LOOKUP):
            entities = self._retrying(
                lambda batch=batch: self._client.get_multi(batch)  # type: ignore[misc]
            )
            self.work.add(read=len(batch))
            if len(entities) != len(batch):
                return {}  # a chunk is gone: trust none of it
            for entity in entities:
                try:
                    rows = json.loads(entity.get("rows") or "{}")
                    found.update({str(k): (str(v[0]), str(v[1])) for k, v in rows.items()})
                except (ValueError, TypeError, IndexError, AttributeError):
                    return {}
        return found

    def write_digest(
        self, sheet: str, rows: dict[str, tuple[str, str]], previous: dict[str, tuple[str, str]]
    ) -> None:
        """Replace the digest of `sheet` (nothing is written when it did not change)."""
        if rows == previous:
            return
        texts: list[str] = []
        part: dict[str, tuple[str, str]] = {}
        size = 0
        for row_id, entry in rows.items():
            item = len(row_id.encode()) + len(entry[0]) + 24
            if part and (len(part) >= _DIGEST_CHUNK_ROWS or size + item > _DIGEST_CHUNK_BYTES):
                texts.append(json.dumps(part, ensure_ascii=False))
                part, size = {}, 0
            part[row_id] = entry
            size += item
        if part:
            texts.append(json.dumps(part, ensure_ascii=False))
        entities = []
        for index, text in enumerate(texts):
            entity = datastore.Entity(
                self._client.key(DIGEST_KIND, f"{sheet}#{index}"), exclude_from_indexes=("rows",)
            )
            entity["rows"] = text
            entities.append(entity)
        head = datastore.Entity(self._client.key(DIGEST_KIND, sheet))
        head["chunks"] = len(texts)
        for batch in batched_by_size(  # chunks first, then the head
            entities,
            size_of=lambda e: len(e["rows"].encode()) + _ROW_OVERHEAD_BYTES,
            count=WRITE_BATCH,
            max_bytes=COMMIT_BYTES,
        ):
            self._put_digest(batch)
        self._put_digest([head])

    def _put_digest(self, entities: Sequence[datastore.Entity]) -> None:
        try:
            self._retrying(lambda: self._client.put_multi(entities))
        except gexc.GoogleAPICallError as exc:  # refused: the loader runs on without it
            raise TransientError(
                f"Datastore refused the digest: {type(exc).__name__}", code="datastore"
            ) from None
        self.work.add(written=len(entities))

    def expired_claims(self) -> list[StoredRow]:
        """PROCESSING rows whose lease has passed, wherever they are (also rows that left the
        sheet). Equality on one property: the built-in index serves it, no composite needed;
        PROCESSING rows are few (about the concurrency cap)."""
        now = self._clock()
        query = self._client.query(kind=KIND)
        query.add_filter(filter=datastore.query.PropertyFilter("status", "=", Status.PROCESSING))
        found: list[StoredRow] = []
        entities: list[datastore.Entity] = []
        for page in fetch_pages(
            query, page_size=500, retrying=self._retrying, counted=self.work.query_read
        ):
            entities.extend(page)
        for entity in entities:
            try:
                row = to_stored_row(entity)
            except BadEntity:
                continue
            if row.lease_expires_at is not None and row.lease_expires_at <= now:
                found.append(row)
        return found


# A query page stays under the Firestore emulator's 4 MiB gRPC message limit (production allows
# more): the next page's count is sized from the bytes of the rows just read, and a page the
# server still refuses as too large is asked again at half the count.
PAGE_BYTES = 2 * 1024 * 1024
PENDING_PAGE_ROWS = 1000
FIRST_PAGE_ROWS = 50
_TOO_LARGE = ("exceeds maximum size", "larger than max", "message larger")


def _entity_bytes(entity: datastore.Entity) -> int:
    size = 64 + len(str(entity.key.name or ""))
    for name, value in entity.items():
        size += len(name) + (len(value) if isinstance(value, str | bytes) else 16)
    return size


def _too_large(exc: Exception) -> bool:
    return isinstance(exc, gexc.ResourceExhausted) and any(t in str(exc) for t in _TOO_LARGE)


def fetch_pages(
    query: Any,
    *,
    page_size: int,
    retrying: Callable[[Callable[[], Any]], Any] | None = None,
    max_bytes: int = PAGE_BYTES,
    counted: Callable[[int], None] | None = None,
) -> Iterator[list[datastore.Entity]]:
    """Every entity of `query`, a page at a time, until the query's cursor says it is done
    (a short page is not the end: production may stop a batch early). `counted` hears of
    every query made, with the entities it returned (empty answers too)."""
    cursor: bytes | None = None
    limit = min(page_size, FIRST_PAGE_ROWS)  # sizes are unknown until a page is read

    def one(limit: int, cursor: bytes | None) -> tuple[list[datastore.Entity], bytes | None]:
        pages = query.fetch(limit=limit, start_cursor=cursor)
        page = next(pages.pages, None)
        return (list(page) if page is not None else []), pages.next_page_token

    while True:
        try:
            if retrying is None:
                entities, next_cursor = one(limit, cursor)
            else:
                entities, next_cursor = retrying(partial(one, limit, cursor))
        except gexc.ResourceExhausted as exc:
            if not _too_large(exc) or limit == 1:
                raise
            limit = max(1, limit // 2)
            continue
        if counted is not None:
            counted(len(entities))
        if entities:
            yield entities
            average = sum(_entity_bytes(e) for e in entities) // len(entities)
            limit = max(1, min(page_size, max_bytes // max(1, average)))
        if next_cursor is None or (not entities and next_cursor == cursor):
            return
        cursor = next_cursor


def _storable_text(value: Any, limit: int = 2000) -> str:
    text = "" if value is None else str(value)
    return text.encode("utf-8", "replace").decode("utf-8")[:limit]


def _finished(entity: datastore.Entity) -> Finished:
    try:
        outputs = json.loads(entity["result"]) if entity.get("result") else None
    except (ValueError, TypeError):
        outputs = None
    error = entity.get("error")
    if isinstance(error, bytes):
        error = error.decode("utf-8", "replace")
    return Finished(
        row_id=str(entity.key.name),
        status=str(entity.get("status")),
        outputs=outputs if isinstance(outputs, dict) else None,
        error=None if error is None else str(error),
        finished_at=entity.get("finished_at"),
    )


def spend_totals(client: datastore.Client) -> dict[str, int]:
    """Tokens charged so far per workflow: the sum over the counter's shards (one query)."""
    totals: dict[str, int] = {}
    for shard in client.query(kind=SPEND_KIND).fetch():
        for name, value in shard.items():
            if name.startswith("w:"):
                totals[name[2:]] = totals.get(name[2:], 0) + int(value or 0)
    return totals


def _still_as_expected(entity: datastore.Entity, t: Transition) -> bool:
    if entity.get("status") != t.expect_status or int(entity.get("generation") or 0) != (
        t.expect_generation
    ):
        return False
    if t.lease_expired_before is not None:
        lease = entity.get("lease_expires_at")
        return lease is None or lease <= t.lease_expired_before
    return True


@dataclass(frozen=True)
class Totals:
    """What the operator's `status` shows: counts, recent pace, usage."""

    counts: dict[str, int]  # status -> rows
    finished_recently: int  # rows that reached SUCCESS/FAILED within the window
    total_tokens: int
    workflow_seconds: float
    pace_seconds: float = 0.0  # what `finished_recently` was counted over


class StatusReport:
    """Read-only views of the status entities for the operator's tools (status, watch,
    export). Aggregation queries and single-property filters use Datastore's built-in
    indexes; the two ordered-and-filtered queries use the composite indexes Terraform makes."""

    def __init__(self, *, client: datastore.Client, clock: Callable[[], datetime] = utcnow) -> None:
        self._client = client
        self._clock = clock

    def _query(self, status: str | None = None) -> Any:
        query = self._client.query(kind=KIND)
        if status is not None:
            query.add_filter(filter=datastore.query.PropertyFilter("status", "=", status))
        return query

    def _aggregate(self, query: Any, build: Callable[[Any], Any]) -> dict[str, Any]:
        results = build(self._client.aggregation_query(query)).fetch()
        return {r.alias: r.value for batch in results for r in batch}

    def totals(self, *, window: timedelta) -> Totals:
        """Counts by status, and the rows finished over the window, or since the loader's
        latest run when that is more recent (a young batch's pace over its own life)."""
        counts = {
            s.value: int(self._aggregate(self._query(s.value), lambda a: a.count(alias="n"))["n"])
            for s in Status
        }
        now = self._clock()
        since = pace_since(now, window=window, batch_started=self.last_load())
        recent = self._client.query(kind=KIND)
        recent.add_filter(filter=datastore.query.PropertyFilter("finished_at", ">=", since))
        finished = self._aggregate(recent, lambda a: a.count(alias="n"))["n"]
        sums = self._aggregate(
            self._client.query(kind=KIND),
            lambda a: a.sum("total_tokens", alias="tokens").sum("elapsed_time", alias="time"),
        )
        return Totals(
            counts=counts,
            finished_recently=int(finished),
            total_tokens=int(finite(sums.get("tokens"))),
            workflow_seconds=finite(sums.get("time")),
            pace_seconds=(now - since).total_seconds(),
        )

    def last_load(self) -> datetime | None:
        """When the loader last ran, on any sheet (one small entity per sheet)."""
        times = [
            e.get("at")
            for e in self._client.query(kind=RUNS_KIND).fetch(limit=100)
            if isinstance(e.get("at"), datetime)
        ]
        return max(times, default=None)

    def retrying(self, limit: int) -> list[dict[str, Any]]:
        """Rows that failed at least once and wait for, or run, another attempt, most tried
        first: their `error` is the last transient error, kept until they finish."""
        found: list[dict[str, Any]] = []
        for status in (Status.PROCESSING, Status.PENDING):
            query = self._query(status.value)
            query.add_filter(filter=datastore.query.PropertyFilter("attempts", ">", 0))
            query.order = ["-attempts"]
            found += [r for r in (_plain(e) for e in query.fetch(limit=limit)) if r.get("error")]
        return found[:limit]

    def row(self, row_id: str) -> dict[str, Any] | None:
        """One row's whole record, or None when no entity has that id."""
        entity = self._client.get(self._client.key(KIND, row_id))
        return _plain(entity) if entity is not None else None

    def charged(self) -> dict[str, int]:
        """Tokens the worker charged so far, per workflow (the spend counter)."""
        return spend_totals(self._client)

    def latest_failures(self, limit: int) -> list[dict[str, Any]]:
        query = self._query(Status.FAILED.value)
        query.order = ["-finished_at"]
        found: list[dict[str, Any]] = []
        for page in fetch_pages(query, page_size=limit):
            found += [_plain(e) for e in page[: limit - len(found)]]
            if len(found) >= limit:
                break
        return found

    def not_run(self) -> list[dict[str, Any]]:
        """Sheet rows the last loader run did not store, by sheet row (keys are row numbers:
        key order is row order, no index needed)."""
        query = self._client.query(kind=NOT_RUN_KIND)
        query.order = ["__key__"]
        return [
            {
                "id": e.get("row_id"),
                "row_number": e.get("row_number"),
                "status": e.get("status"),
                "error": e.get("reason"),
            }
            for page in fetch_pages(query, page_size=1000)
            for e in page
        ]

    def rows(
        self, *, status: str | None = None, by_row: bool = True, page_size: int = 500
    ) -> Iterator[dict[str, Any]]:
        """Every row, one page at a time (memory stays at a page whatever the total; pages are
        bounded by bytes as well as by count, see fetch_pages)."""
        query = self._query(status)
        if by_row:
            query.order = ["row_number"]
        for page in fetch_pages(query, page_size=page_size):
            yield from (_plain(e) for e in page)


def _plain(entity: datastore.Entity) -> dict[str, Any]:
    return {"id": entity.key.name, **dict(entity)}
