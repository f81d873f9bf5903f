"""Serve a functions-framework function over real HTTP on a free port, in-process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import functions_framework
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
