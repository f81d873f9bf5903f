"""Helpers of the local command-line tools (make test-worker, make test-loader): each checks
what it depends on first and gives up in seconds with what to run, never a long hang."""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlsplit

from google.cloud import datastore

from shared.core.errors import ConfigError
from shared.entrypoints.config import CommonSettings, load


def listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((host, port)) == 0


def reachable_or_exit(url: str, what: str, start_with: str) -> None:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not listening(parts.hostname or "127.0.0.1", parts.port or 80):
        sys.exit(f"nothing answers at {url}: start {what} with `{start_with}`")


def emulator_client(target: str) -> datastore.Client:
    """A Datastore client on the local emulator, for the project and namespace in the settings;
    exits with what to do when the emulator or a setting is missing."""
    if not os.path.exists(".env"):
        sys.exit(f"no .env here: run `make setup` first (make {target} reads its settings)")
    host = os.environ.get("DATASTORE_EMULATOR_HOST")
    if not host:
        sys.exit(
            f"DATASTORE_EMULATOR_HOST is not set: run `make run-emulator` first "
            f"(make {target} reads it from .env)"
        )
    reachable_or_exit(host, "the Firestore emulator", "make run-emulator` (or `make run-local")
    try:
        settings = load(CommonSettings)
    except ConfigError as exc:
        sys.exit(exc.message)
    return datastore.Client(
        project=settings.google_cloud_project, namespace=settings.datastore_namespace
    )
