"""Benchmark: one loader run enqueueing N new rows (default 10,000).

Runs the real loader service against the Firestore emulator, the Sheets stand-in and the
Cloud Tasks stand-in adding LATENCY seconds to every CreateTask (a real CreateTask takes
tens of milliseconds). Cloud Scheduler allows a run 30 minutes; the target is well within.

    make bench                      # or: python -m bench.enqueue --rows 10000 --latency 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from local import emulator as emu
from local.cloud_tasks_standin import CloudTasksStandIn
from local.sheets_standin import SheetsStandIn

RESULTS = Path(__file__).with_name("results")


def run(rows: int, latency: float, concurrency: int) -> dict[str, object]:
    from shared import wiring
    from shared.planning import LoadOptions

    sheet = [
        ["id", "title", "lang"],
        *[[f"row-{i:06d}", f"질문 {i} 🐱", "ko"] for i in range(rows)],
    ]
    sheets = SheetsStandIn({"bench": {"Sheet1": sheet}}).start()
    tasks = CloudTasksStandIn(latency=latency).start()
    os.environ.update(
        {
            "GOOGLE_CLOUD_PROJECT": "bench",
            "DATASTORE_NAMESPACE": f"b{uuid.uuid4().hex[:10]}",
            "SPREADSHEET_ID": "bench",
            "SHEET_NAME": "Sheet1",
            "SHEETS_API_ENDPOINT": sheets.endpoint,
            "TASKS_LOCATION": "asia-northeast3",
            "TASKS_QUEUE": "bench",
            "WORKER_URL": "https://worker.example",
            "CLOUD_TASKS_EMULATOR_HOST": tasks.host,
            "ENQUEUE_CONCURRENCY": str(concurrency),
            "LOG_LEVEL": "WARNING",
        }
    )
    wiring.reset()
    try:
        service = wiring.loader_service()
        started = time.perf_counter()
        first = service.load(LoadOptions())
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        second = service.load(LoadOptions())
        second_s = time.perf_counter() - started
    finally:
        tasks.stop()
        sheets.stop()
    assert first.tasks_created == rows, first
    assert second.tasks_created == 0, second
    return {
        "rows": rows,
        "create_task_latency_s": latency,
        "enqueue_concurrency": concurrency,
        "first_run_s": round(first_s, 1),
        "second_run_s": round(second_s, 1),
        "rows_per_s": round(rows / first_s),
        "tasks_created": first.tasks_created,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    running = None
    if not os.environ.get("DATASTORE_EMULATOR_HOST"):
        running = emu.start()
        os.environ["DATASTORE_EMULATOR_HOST"] = running.host
    try:
        result = run(args.rows, args.latency, args.concurrency)
    finally:
        if running:
            running.stop()
    result.update(
        date=datetime.now(UTC).date().isoformat(),
        machine=f"{os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, Firestore emulator (Datastore mode)",
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "enqueue.json"
    history = json.loads(out.read_text()) if out.exists() else []
    history.append(result)
    out.write_text(json.dumps(history, ensure_ascii=False, indent=2) + "\n")
    print(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
