"""Before `make run-worker` / `make run-loader` start: check what they depend on and print
what they will use (never the key). Exits non-zero with what to run when something is missing."""

from __future__ import annotations

import argparse
import os
import sys

from local.devtools import reachable_or_exit
from shared.core.errors import ConfigError
from shared.entrypoints.config import LoaderSettings, WorkerSettings, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("function", choices=["worker", "loader"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if not os.path.exists(".env"):
        sys.exit("no .env here: run `make setup` first")
    host = os.environ.get("DATASTORE_EMULATOR_HOST")
    if host:
        reachable_or_exit(host, "the Firestore emulator", "make run-emulator")
    try:
        if args.function == "worker":
            w = load(WorkerSettings)
            key = "DIFY_API_KEY (set)" if w.dify_api_key else f"secret {w.dify_api_key_secret_id}"
            lines = [
                f"Dify: {w.dify_api_endpoint} ({w.dify_response_mode}, timeout "
                f"{w.dify_api_timeout_minutes:g} min, key: {key})",
                f"queue it pauses on app-wide failures: {w.queue_path or 'none'}",
            ]
        else:
            ld = load(LoaderSettings)
            sheet = ld.sheets_api_endpoint or "the Sheets API"
            lines = [
                f"sheet: {ld.spreadsheet_id} / {ld.sheet_name!r} via {sheet}",
                f"queue: {ld.queue_path}, tasks to {ld.worker_url}",
            ]
    except ConfigError as exc:
        sys.exit(
            f"{exc.message}\n(edit .env, then start again: running functions read .env "
            "only when they start)"
        )
    print(f"{args.function} will listen on http://127.0.0.1:{args.port}", flush=True)
    print(f"Datastore: {'emulator ' + host if host else 'Google Cloud (ADC)'}", flush=True)
    for line in lines:
        print(line, flush=True)


if __name__ == "__main__":
    main()
