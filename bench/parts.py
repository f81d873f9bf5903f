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
    from shared.core.planning import LoadOptions
    from shared.entrypoints import wiring

    service = wiring.loader_service()
    started = time.perf_counter()
    first = service.load(LoadOptions())
    first_s = time.perf_counter() - started
    profile = os.environ.get("BENCH_PROFILE")  # a file: cProfile the unchanged re-run into it
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    second = service.load(LoadOptions())
    second_s = time.perf_counter() - started
    if profiler is not None and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    return {
        "first_s": round(first_s, 2),
        "second_s": round(second_s, 2),
        "tasks_created": first.tasks_created,
        "second_tasks_created": second.tasks_created,
        "errors": first.error_count + second.error_count,
        "second_reads": second.datastore.get("entities_read"),
        "second_queries": second.datastore.get("queries"),
        "first_reads": first.datastore.get("entities_read"),
        "peak_rss_mib": peak_rss_mib(),
    }


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
