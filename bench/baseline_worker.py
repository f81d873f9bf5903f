"""A bare worker, for comparison only (never deployed): claim the row in a transaction, run the
Dify workflow (streaming, as the project's worker does by default), record the outcome in a
transaction (or, when the call fails, put the row back to PENDING and answer 500 so the task
is retried), print one JSON line. Same libraries as the project's worker (functions-framework,
google-cloud-datastore, httpx); none of its safeguards (no scrubbing, size limits, watchdogs,
deadlines, error classification, retries beyond the library's).

    functions-framework --source bench/baseline_worker.py --target process_row
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import flask
import functions_framework
import httpx
from google.cloud import datastore

KIND = "dify_batch_process_status"
LEASE = timedelta(minutes=11)
client = datastore.Client(
    project=os.environ["GOOGLE_CLOUD_PROJECT"], namespace=os.environ.get("DATASTORE_NAMESPACE")
)
threads = int(os.environ.get("THREADS", "8"))
http = httpx.Client(
    limits=httpx.Limits(max_connections=2 * threads, max_keepalive_connections=2 * threads),
    timeout=httpx.Timeout(600.0, connect=10.0),
)
url = os.environ["DIFY_API_ENDPOINT"]  # the workflow's run URL, as the worker takes it
headers = {"Authorization": f"Bearer {os.environ['DIFY_API_KEY']}", "Accept": "text/event-stream"}


def claim(row_id: str) -> tuple[dict[str, Any], str] | None:
    with client.transaction() as txn:
        entity = client.get(client.key(KIND, row_id), transaction=txn)
        if entity is None or entity.get("status") != "PENDING":
            return None
        claim_id, now = uuid.uuid4().hex, datetime.now(UTC)
        entity.update(
            status="PROCESSING",
            attempts=int(entity.get("attempts") or 0) + 1,
            claim_id=claim_id,
            lease_expires_at=now + LEASE,
            updated_at=now,
        )
        txn.put(entity)
        return json.loads(entity["inputs"]), claim_id


def run(inputs: dict[str, Any]) -> dict[str, Any]:
    body = {"inputs": inputs, "response_mode": "streaming", "user": "bench"}
    with http.stream("POST", url, json=body, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("event") == "workflow_finished":
                    return dict(event["data"])
    raise RuntimeError("the stream ended before workflow_finished")


def record(row_id: str, claim_id: str, data: dict[str, Any]) -> None:
    with client.transaction() as txn:
        entity = client.get(client.key(KIND, row_id), transaction=txn)
        if entity is None or entity.get("claim_id") != claim_id:
            return
        ok = data.get("status") == "succeeded"
        now = datetime.now(UTC)
        entity.update(
            status="SUCCESS" if ok else "FAILED",
            result=json.dumps(data.get("outputs"), ensure_ascii=False) if ok else None,
            error=None if ok else str(data.get("error")),
            workflow_run_id=data.get("id"),
            elapsed_time=data.get("elapsed_time"),
            total_tokens=data.get("total_tokens"),
            finished_at=now,
            write_pending=True,
            claim_id=None,
            lease_expires_at=None,
            updated_at=now,
        )
        txn.put(entity)


def release(row_id: str, claim_id: str) -> None:
    with client.transaction() as txn:
        entity = client.get(client.key(KIND, row_id), transaction=txn)
        if entity is not None and entity.get("claim_id") == claim_id:
            entity.update(status="PENDING", claim_id=None, lease_expires_at=None)
            txn.put(entity)


@functions_framework.http
def process_row(request: flask.Request) -> tuple[str, int]:
    started = time.monotonic()
    row_id = str(request.get_json()["id"])
    claimed = claim(row_id)
    outcome, status = "duplicate", 200
    if claimed is not None:
        try:
            record(row_id, claimed[1], run(claimed[0]))
            outcome = "succeeded"
        except Exception:  # e.g. the Dify stand-in reset the connection: let the task retry
            release(row_id, claimed[1])
            outcome, status = "retry", 500
    line = {
        "severity": "INFO",
        "event": "row_outcome",
        "row_id": row_id,
        "outcome": outcome,
        "duration_s": round(time.monotonic() - started, 3),
    }
    sys.stdout.write(json.dumps(line) + "\n")
    return outcome, status
