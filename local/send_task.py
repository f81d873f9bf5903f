"""`make test-worker`: create a sample PENDING row, deliver it to the local worker as Cloud
Tasks would, and print the worker's answer and the stored outcome."""

from __future__ import annotations

import argparse
import json
import sys
import uuid

import httpx

from local.devtools import emulator_client, reachable_or_exit
from shared.adapters.store import StatusStore
from shared.core.model import KIND, NewRow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker-url", default="http://127.0.0.1:8080")
    parser.add_argument("--id", default=None, help="row id (default: a new sample-… id)")
    args = parser.parse_args()
    client = emulator_client("test-worker")
    reachable_or_exit(args.worker_url, "the worker", "make run-worker` (or `make run-local")
    row_id = args.id or f"sample-{uuid.uuid4().hex[:8]}"
    inputs = {"title": "고양이는 왜 상자를 좋아할까? 🐱", "language": "ko"}
    StatusStore(client=client).insert_new([NewRow(row_id, inputs, "sample", 0)])
    print(f"created PENDING row {row_id!r} with inputs {json.dumps(inputs, ensure_ascii=False)}")
    try:
        answer = httpx.post(args.worker_url, json={"id": row_id}, timeout=1900)
    except httpx.ConnectError:
        sys.exit(f"no worker at {args.worker_url}: start it with `make run-worker`")
    print(f"worker answered HTTP {answer.status_code}: {answer.text.strip()}")
    stored = dict(client.get(client.key(KIND, row_id)))
    for name in ("inputs", "result"):  # stored as JSON text; shown as JSON
        if stored.get(name):
            stored[name] = json.loads(stored[name])
    print("stored row:")
    print(json.dumps(stored, ensure_ascii=False, indent=2, default=str))


if __name__ == "__main__":
    main()
