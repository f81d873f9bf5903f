"""The spend counter against the emulator: a finished run's tokens are charged in the same
transaction as its outcome, exactly once, and concurrent workers lose no count."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.cloud import datastore

from shared.adapters.store import SPEND_KIND, StatusStore
from shared.core.model import KIND, NewRow
from tests.conftest import PROJECT

pytestmark = pytest.mark.emulator


def claimed(store: StatusStore, row_id: str) -> str:
    claim = store.claim(row_id, max_attempts=5, lease_seconds=600)
    assert claim.claim_id is not None
    return claim.claim_id


def succeeded(tokens: int) -> dict[str, object]:
    return {"status": "SUCCESS", "total_tokens": tokens, "result": "{}"}


def test_a_finished_run_is_charged_once_even_when_its_write_is_repeated(store):
    store.insert_new([NewRow("a", {"q": "질문"}, "h", 2), NewRow("b", {"q": "x"}, "h", 3)])
    claim_a = claimed(store, "a")
    assert store.finish("a", claim_id=claim_a, changes=succeeded(120), charge_tokens=True)
    # A second write of the same outcome (a duplicate delivery) finds the claim gone.
    assert not store.finish("a", claim_id=claim_a, changes=succeeded(120), charge_tokens=True)
    # A run that charged nothing (no tokens) adds nothing.
    assert store.finish("b", claim_id=claimed(store, "b"), changes=succeeded(0), charge_tokens=True)
    assert store.spend_totals() == {"": 120}


def test_without_a_limit_the_finish_writes_no_counter(store):
    # The worker charges only while a spend limit is set: without one, a finish writes its row
    # and nothing else (no contended shard at the queue's concurrency).
    store.insert_new([NewRow("a", {"q": "x"}, "h", 2)])
    assert store.finish("a", claim_id=claimed(store, "a"), changes=succeeded(120))
    assert store.spend_totals() == {}


def test_totals_are_kept_per_workflow(store):
    store.insert_new(
        [
            NewRow("a", {"q": "1"}, "h", 2, workflow="summary"),
            NewRow("b", {"q": "2"}, "h", 3, workflow="translate"),
            NewRow("c", {"q": "3"}, "h", 4, workflow="summary"),
        ]
    )
    for row_id, tokens in (("a", 10), ("b", 200), ("c", 5)):
        assert store.finish(
            row_id, claim_id=claimed(store, row_id), changes=succeeded(tokens), charge_tokens=True
        )
    assert store.spend_totals() == {"summary": 15, "translate": 200}


def test_concurrent_workers_lose_no_count(namespace, emulator_host):
    """48 rows finished by 12 threads at once, each with its own Datastore client (like
    separate worker instances): 48 charges on 20 shards must collide, contended transactions
    abort and are retried, and the total is still the exact sum."""
    rows_n = 48
    rows = [NewRow(f"r{i:03d}", {"q": f"질문 {i}"}, "h", i + 2) for i in range(rows_n)]
    setup = StatusStore(client=datastore.Client(project=PROJECT, namespace=namespace))
    setup.insert_new(rows)
    local = threading.local()

    def worker_store() -> StatusStore:
        if not hasattr(local, "store"):
            local.store = StatusStore(client=datastore.Client(project=PROJECT, namespace=namespace))
        return local.store

    def finish(i: int) -> bool:
        store = worker_store()
        row_id = f"r{i:03d}"
        return store.finish(
            row_id, claim_id=claimed(store, row_id), changes=succeeded(i + 1), charge_tokens=True
        )

    with ThreadPoolExecutor(max_workers=12) as pool:
        assert all(pool.map(finish, range(rows_n)))
    expected = sum(range(1, rows_n + 1))
    assert setup.spend_totals() == {"": expected}
    # The rows agree with the counter, and the writes were spread over several shards.
    client = setup.client
    assert sum(e["total_tokens"] for e in client.query(kind=KIND).fetch()) == expected
    assert len(list(client.query(kind=SPEND_KIND).fetch())) > 1
