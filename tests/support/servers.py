"""Serve a functions-framework function over real HTTP on a free port, in-process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import functions_framework
import pytest
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def serve_function(source: str, target: str) -> Iterator[str]:
    """`source` relative to the repository root, e.g. "worker/main.py"; yields the base URL."""
    app = functions_framework.create_app(target=target, source=str(ROOT / source))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve_loader_and_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The worker and the loader as functions-framework servers, the loader's tasks sent to
    this worker (WORKER_URL); yields the loader's URL. Settings come from the environment."""
    with serve_function("worker/main.py", "process_row") as worker_url:
        monkeypatch.setenv("WORKER_URL", worker_url)
        with serve_function("loader/main.py", "load_sheet") as loader_url:
            yield loader_url


def wait_for(predicate: Callable[[], bool], seconds: float = 120.0, every: float = 0.2) -> None:
    """Until `predicate()` holds; the test fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    pytest.fail(f"the batch did not settle in {seconds:g} s")
