"""The separate processes the benchmarks run (each prints one JSON line at the end), so that
every figure is measured in the process it belongs to, with the stand-ins elsewhere.

    python -m bench.parts standins --rows N --latency S     # serve Sheets + Cloud Tasks
    python -m bench.parts loader                            # two loader runs (settings: env)
    python -m bench.parts naive                             # the naive loader, same data
    python -m bench.parts export --out FILE                 # dify-batch export of every row
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import resource
import sys
import time
from typing import Any

from local.cloud_tasks_standin import CloudTasksStandIn
from local.sheets_standin import SheetsStandIn


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def sheet(rows: int) -> list[list[str]]:
    return [
        ["id", "question", "grade"],
        *[
            [f"row-{i:06d}", f"질문 {i}: 고양이는 왜 상자를 좋아할까? 🐱", str(i % 6 + 1)]
            for i in range(rows)
        ],
    ]


def standins(rows: int, latency: float) -> None:
    sheets = SheetsStandIn({"bench": {"Sheet1": sheet(rows)}}).start()
    tasks = CloudTasksStandIn(latency=latency).start()
    print(json.dumps({"sheets": sheets.endpoint, "tasks": tasks.host}), flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    tasks.stop()
    sheets.stop()


def loader() -> dict[str, Any]:
    """Four runs: new rows, an unchanged re-run (every row still queued), a run after every
    row finished, and a run at rest. BENCH_PROFILE=FILE cProfiles the run named by
    BENCH_PROFILE_RUN (first, second, settle, rest; default second) into FILE."""
    from shared.core.planning import LoadOptions
    from shared.entrypoints import wiring

    service = wiring.loader_service()
    profile = os.environ.get("BENCH_PROFILE")
    profiled = os.environ.get("BENCH_PROFILE_RUN", "second")

    def timed(name: str) -> tuple[Any, float]:
        profiler = cProfile.Profile() if profile and name == profiled else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        report = service.load(LoadOptions())
        seconds = time.perf_counter() - started
        if profiler is not None and profile:
            profiler.disable()
            profiler.dump_stats(profile)
        peaks[name] = peak_rss_mib()  # the process's peak so far: which run raised it
        return report, round(seconds, 2)

    peaks: dict[str, float] = {}

    first, first_s = timed("first")
    second, second_s = timed("second")
    finish_every_row(service, first.rows_read)
    settle, settle_s = timed("settle")  # reads every finished row once, notes them
    rest, rest_s = timed("rest")  # a sheet at rest
    return {
        "first_s": first_s,
        "first_reads": first.datastore.get("entities_read"),
        "tasks_created": first.tasks_created,
        "second_s": second_s,
        "second_reads": second.datastore.get("entities_read"),
        "second_queries": second.datastore.get("queries"),
        "second_tasks_created": second.tasks_created,
        "settle_s": settle_s,
        "settle_reads": settle.datastore.get("entities_read"),
        "rest_s": rest_s,
        "rest_reads": rest.datastore.get("entities_read"),
        "rest_keys": rest.datastore.get("keys_read"),
        "rest_queries": rest.datastore.get("queries"),
        "rest_skipped": sum(rest.skipped.values()),
        "errors": sum(r.error_count for r in (first, second, settle, rest)),
        "peak_rss_mib": peak_rss_mib(),
        "peak_after_mib": peaks,
    }


def finish_every_row(service: Any, rows: int) -> None:
    """What the workers would do to every row: SUCCESS, with a result (written straight to
    Datastore, not through a worker, to keep the loader's figures apart)."""
    from datetime import UTC, datetime

    from google.cloud import datastore

    from shared.core.model import KIND

    client: datastore.Client = service._store.client
    keys = [client.key(KIND, f"row-{i:06d}") for i in range(rows)]  # the ids of sheet()
    now = datetime.now(UTC)
    for start in range(0, len(keys), 500):
        entities = client.get_multi(keys[start : start + 500])
        for entity in entities:
            entity.update(
                status="SUCCESS",
                result='{"answer": "상자는 안전하다"}',
                finished_at=now,
                updated_at=now,
                write_pending=True,
            )
        client.put_multi(entities)


def naive() -> dict[str, Any]:
    """Per row, in sequence: one lookup, one write, one CreateTask (what a first version would
    do). Same sheet reader, same clients, same emulator and stand-ins."""
    from google.cloud import datastore, tasks_v2

    from shared.adapters.sheet import SheetReader
    from shared.core.rows import parse_rows
    from shared.entrypoints import wiring
    from shared.entrypoints.config import LoaderSettings, load

    settings = load(LoaderSettings)
    client = datastore.Client(
        project=settings.google_cloud_project, namespace=settings.datastore_namespace
    )
    tasks = wiring.tasks_client(settings.cloud_tasks_emulator_host)
    reader = SheetReader(
        service=wiring.sheets_service(settings),
        spreadsheet_id=settings.spreadsheet_id,
        sheet_name=settings.sheet_name,
        chunk_rows=settings.sheet_chunk_rows,
    )
    started = time.perf_counter()
    header, body = reader.read()
    created = 0
    for row in parse_rows(header, body, id_column="0").rows:
        key = client.key("dify_batch_process_status", row.row_id)
        if client.get(key) is not None:
            continue
        entity = datastore.Entity(key, exclude_from_indexes=("inputs",))
        entity.update(status="PENDING", inputs=json.dumps(row.inputs, ensure_ascii=False))
        client.put(entity)
        task = tasks_v2.Task(
            http_request=tasks_v2.HttpRequest(
                url=settings.worker_url,
                http_method=tasks_v2.HttpMethod.POST,
                body=json.dumps({"id": row.row_id}).encode(),
            )
        )
        tasks.create_task(request={"parent": settings.queue_path, "task": task})
        created += 1
    return {
        "first_s": round(time.perf_counter() - started, 2),
        "tasks_created": created,
        "peak_rss_mib": peak_rss_mib(),
    }


def export(out: str) -> dict[str, Any]:
    from click.testing import CliRunner

    from cli.main import cli

    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["export", "--format", "csv", "-o", out])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    with open(out, encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "lines": lines,
        "peak_rss_mib": peak_rss_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("part", choices=["standins", "loader", "naive", "export"])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--out", default=os.devnull)
    args = parser.parse_args()
    if args.part == "standins":
        standins(args.rows, args.latency)
        return
    result = {"loader": loader, "naive": naive}.get(args.part)
    print(json.dumps(result() if result else export(args.out)), flush=True)


if __name__ == "__main__":
    main()
