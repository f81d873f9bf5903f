"""`make run-loader`: serve the loader function locally.

When .env points the Sheets API or Cloud Tasks at local addresses where nothing answers
yet, the matching stand-in starts here too: the Sheets stand-in serving the bundled sample
sheet, and the Cloud Tasks stand-in delivering tasks to WORKER_URL (`make run-worker`) at
most LOCAL_MAX_CONCURRENT_DISPATCHES at a time. With a real sheet and credentials in .env
(SHEETS_API_ENDPOINT unset), the real Sheets API is read.
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import functions_framework
from werkzeug.serving import make_server

from local.cloud_tasks_standin import CloudTasksStandIn
from local.sheets_standin import SAMPLE_CSV, SheetsStandIn, read_csv

ROOT = Path(__file__).resolve().parents[1]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def start_standins() -> list[str]:
    started = []
    endpoint = os.environ.get("SHEETS_API_ENDPOINT")
    if endpoint:
        url = urlsplit(endpoint)
        if url.hostname in LOCAL_HOSTS and not _listening(url.hostname, url.port or 80):
            spreadsheet = os.environ.get("SPREADSHEET_ID", "sample")
            tab = os.environ.get("SHEET_NAME", "Sheet1")
            SheetsStandIn({spreadsheet: {tab: read_csv(SAMPLE_CSV)}}).start(
                url.hostname, url.port or 80
            )
            started.append(
                f"Sheets stand-in on {endpoint} serving {SAMPLE_CSV.name} as {spreadsheet}/{tab}"
            )
    tasks_host = os.environ.get("CLOUD_TASKS_EMULATOR_HOST")
    if tasks_host:
        host, _, port = tasks_host.rpartition(":")
        if host in LOCAL_HOSTS and not _listening(host, int(port)):
            limit = int(os.environ.get("LOCAL_MAX_CONCURRENT_DISPATCHES", "5"))
            CloudTasksStandIn(
                dispatch=True,
                max_concurrent_dispatches=limit,
                max_attempts=int(os.environ.get("MAX_ATTEMPTS", "5")),
            ).start(int(port))
            started.append(
                f"Cloud Tasks stand-in on {tasks_host}, delivering to "
                f"{os.environ.get('WORKER_URL')} at most {limit} at a time"
            )
    return started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8082)
    args = parser.parse_args()
    for line in start_standins():
        print(line, flush=True)
    app = functions_framework.create_app(target="load_sheet", source=str(ROOT / "loader/main.py"))
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    print(
        f"loader (load_sheet) on http://127.0.0.1:{args.port}; trigger it with `make test-loader`",
        flush=True,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
