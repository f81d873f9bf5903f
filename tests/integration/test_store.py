"""StatusStore against the emulator: transactions under real contention."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from shared.core.claims import ClaimVerdict
from shared.core.model import KIND, NewRow, Status, Transition
from tests.conftest import PROJECT
from tests.support.servers import ROOT

pytestmark = pytest.mark.emulator


def new(row_id: str) -> NewRow:
    return NewRow(row_id, {"q": row_id}, "h", 1)


def test_racing_claims_have_exactly_one_winner(store):
    store.insert_new([new("r")])
    barrier = threading.Barrier(16)
    verdicts: list[ClaimVerdict] = []

    def claim() -> None:
        barrier.wait()
        verdicts.append(store.claim("r", max_attempts=5, lease_seconds=60).verdict)

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verdicts.count(ClaimVerdict.CLAIM) == 1
    assert verdicts.count(ClaimVerdict.BUSY) == 15


CLAIM_IN_A_PROCESS = """
import sys, time
from google.cloud import datastore
from shared.adapters.store import StatusStore
start, project, namespace = float(sys.argv[1]), sys.argv[2], sys.argv[3]
store = StatusStore(client=datastore.Client(project=project, namespace=namespace))
time.sleep(max(0.0, start - time.time()))
print(store.claim("r", max_attempts=5, lease_seconds=60).verdict.value)
"""


def test_racing_claims_from_separate_processes_have_exactly_one_winner(store, namespace):
    """Separate processes share no lock: Datastore's transaction alone settles the race."""
    store.insert_new([new("r")])
    start = time.time() + 6  # every process is up and waiting by then
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM_IN_A_PROCESS, str(start), PROJECT, namespace],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    verdicts = sorted(p.communicate(timeout=180)[0].strip() for p in processes)
    assert verdicts == ["busy", "busy", "busy", "claim"]


def test_an_outcome_is_written_only_while_the_claim_is_ours(store, ds_client):
    store.insert_new([new("r")])
    first = store.claim("r", max_attempts=5, lease_seconds=0)  # expires at once
    second = store.claim("r", max_attempts=5, lease_seconds=60)
    assert (first.verdict, second.verdict) == (ClaimVerdict.CLAIM, ClaimVerdict.CLAIM)
    assert not store.finish("r", claim_id=first.claim_id, changes={"status": "SUCCESS"})
    assert store.finish("r", claim_id=second.claim_id, changes={"status": "FAILED"})
    row = ds_client.get(ds_client.key(KIND, "r"))
    assert (row["status"], row["attempts"], row["claim_id"]) == ("FAILED", 2, None)


def test_insert_new_never_overwrites_an_existing_row(store, ds_client):
    store.insert_new([new("a")])
    store.claim("a", max_attempts=5, lease_seconds=60)
    assert store.insert_new([new("a"), new("b")]) == ["b"]
    assert ds_client.get(ds_client.key(KIND, "a"))["status"] == "PROCESSING"


def test_long_text_is_not_indexed(store, ds_client):
    store.insert_new([NewRow("big", {"text": "x" * 5000}, "h", 1)])
    row = ds_client.get(ds_client.key(KIND, "big"))
    assert {"inputs", "result", "error"} <= set(row.exclude_from_indexes)


def test_transitions_apply_only_to_rows_still_as_expected(store):
    store.insert_new([new("a"), new("b")])
    store.claim("b", max_attempts=5, lease_seconds=60)
    applied = store.apply(
        [
            Transition("a", Status.PENDING, 0, {"generation": 1}),
            Transition("b", Status.PENDING, 0, {"generation": 1}),  # b is PROCESSING now
            Transition("missing", Status.PENDING, 0, {"generation": 1}),
        ]
    )
    assert applied == ["a"]
    assert store.get_many(["a", "b"])["a"].generation == 1


def test_get_many_reads_more_than_one_lookup_batch(store):
    ids = [f"row-{i}" for i in range(1200)]
    store.insert_new([new(i) for i in ids])
    found = store.get_many([*ids, "absent"])
    assert len(found) == 1200
    assert found["row-1199"].inputs == {"q": "row-1199"}


def test_rows_finished_since_are_read_page_by_page_and_counted(store, monkeypatch):
    from datetime import UTC, datetime, timedelta

    import shared.adapters.store as store_module

    monkeypatch.setattr(store_module, "FINISHED_PAGE", 2)
    before = datetime.now(UTC) - timedelta(seconds=1)
    store.insert_new([new(f"f{i}") for i in range(5)])
    for i in range(5):
        claim = store.claim(f"f{i}", max_attempts=3, lease_seconds=60)
        status = Status.FAILED if i == 0 else Status.SUCCESS
        changes = {"status": status.value, "finished_at": datetime.now(UTC), "total_tokens": 10}
        assert store.finish(f"f{i}", claim_id=claim.claim_id, changes=changes)
    work = store.work.snapshot()
    rows = store.finished_since(before)
    assert sorted(r["status"] for r in rows) == ["FAILED", *["SUCCESS"] * 4]
    assert sum(r["total_tokens"] for r in rows) == 50
    assert store.work.since(work) == {
        "entities_read": 5,
        "entities_written": 0,
        "queries": 3,  # pages of 2, 2 and 1
        "keys_read": 0,
    }


def test_a_digest_of_many_chunks_reads_back_whole_and_is_not_rewritten_unchanged(
    store, monkeypatch
):
    import shared.adapters.store as store_module

    monkeypatch.setattr(store_module, "_DIGEST_CHUNK_ROWS", 3)
    monkeypatch.setattr(store_module, "_DIGEST_CHUNKS_PER_LOOKUP", 2)
    rows = {f"행-{i}": (f"hash{i}", "SUCCESS" if i % 2 else "FAILED") for i in range(10)}
    store.write_digest("book/tab", rows, {})
    assert store.read_digest("book/tab") == rows
    work = store.work.snapshot()
    store.write_digest("book/tab", rows, store.read_digest("book/tab"))
    assert store.work.since(work)["entities_written"] == 0
    store.write_digest("book/tab", {"행-1": ("hash1", "SUCCESS")}, rows)
    assert store.read_digest("book/tab") == {"행-1": ("hash1", "SUCCESS")}
    assert store.read_digest("other/tab") == {}
