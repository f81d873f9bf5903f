"""`make test-loader`: trigger the local loader as Cloud Scheduler would, print its summary,
then follow the rows' statuses in Datastore until they settle (or --wait runs out)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import httpx

from local.devtools import emulator_client
from shared.model import KIND


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loader-url", default="http://127.0.0.1:8082")
    parser.add_argument("--wait", type=float, default=60, help="seconds to follow the rows")
    parser.add_argument("options", nargs="*", help="e.g. dry_run=true retry_failed=true")
    args = parser.parse_args()
    options = dict(o.split("=", 1) for o in args.options)
    try:
        answer = httpx.post(args.loader_url, json=options, timeout=1900)
    except httpx.ConnectError:
        sys.exit(f"no loader at {args.loader_url}: start it with `make run-loader`")
    print(f"loader answered HTTP {answer.status_code}:")
    print(json.dumps(answer.json(), ensure_ascii=False, indent=2))
    if not os.environ.get("DATASTORE_EMULATOR_HOST"):
        return  # a real deployment: the summary is all there is to show
    client = emulator_client("test-loader")
    deadline = time.monotonic() + args.wait
    while True:
        rows = sorted(client.query(kind=KIND).fetch(), key=lambda e: e.get("row_number") or 0)
        counts = Counter(e["status"] for e in rows)
        print("statuses:", dict(counts), flush=True)
        if not counts.keys() & {"PENDING", "PROCESSING"} or time.monotonic() > deadline:
            break
        time.sleep(2)
    for e in rows:
        shown = e.get("result") or e.get("error") or ""
        print(f"  {e.key.name:<12} {e['status']:<10} {shown[:70]}")


if __name__ == "__main__":
    main()
