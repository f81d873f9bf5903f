"""`make run-local`: the same stack as `make demo`, on the ports .env names, kept up for manual
work (`make test-loader`, `make test-worker`, `dify-batch status`) until Ctrl+C.

Nothing is triggered: run `make test-loader` in another terminal. Edits to .env need a restart
(Ctrl+C, then `make run-local` again); the emulator keeps no data after it stops.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from local.sheets_standin import SAMPLE_CSV
from local.stack import ROOT, Ports, Stack, listening


def _port(value: str | None, default: int) -> int:
    if not value:
        return default
    if "://" not in value:
        value = f"http://{value}"
    return urlsplit(value).port or default


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", type=Path, default=SAMPLE_CSV)
    parser.add_argument("--loader-port", type=int, default=8082)
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env", help=argparse.SUPPRESS)
    args = parser.parse_args()
    env = dotenv_values(args.env_file)
    ports = Ports(
        emulator=_port(env.get("DATASTORE_EMULATOR_HOST"), 8081),
        worker=_port(env.get("WORKER_URL"), 8080),
        loader=args.loader_port,
        dify=_port(env.get("DIFY_API_ENDPOINT"), 8090),
        sheets=_port(env.get("SHEETS_API_ENDPOINT"), 8091),
        tasks=_port(env.get("CLOUD_TASKS_EMULATOR_HOST"), 8123),
    )
    busy = [f"{name} {port}" for name, port in vars(ports).items() if listening(port)]
    if busy:
        print(
            f"ports already in use: {', '.join(busy)}. Stop what runs there (another "
            "`make run-local`, `make run-emulator`: `make stop-emulator`) and try again.",
            file=sys.stderr,
        )
        return 1
    limit = int(env.get("LOCAL_MAX_CONCURRENT_DISPATCHES") or 5)
    stack = Stack(
        csv=args.csv.resolve(),
        namespace=env.get("DATASTORE_NAMESPACE") or "",
        ports=ports,
        max_concurrent=limit,
        env_file=args.env_file,
    )
    stack.handle_signals()  # Ctrl+C at any moment stops everything, without a traceback
    try:
        stack.start()
        print(
            "\nall up. In another terminal: `make test-loader` (run the sheet), "
            "`make test-worker` (one sample row), `.venv/bin/dify-batch status`. "
            "Ctrl+C stops everything.",
            flush=True,
        )
        threading.Event().wait()
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
    except RuntimeError as exc:
        print(f"could not start: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        print("stopped: everything run-local started", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
