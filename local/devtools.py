"""Helpers of the local command-line tools (make test-worker, make test-loader)."""

from __future__ import annotations

import os
import sys

from google.cloud import datastore

from shared.config import CommonSettings, load
from shared.errors import ConfigError


def emulator_client(target: str) -> datastore.Client:
    """A Datastore client on the local emulator, for the project and namespace in the settings;
    exits with what to do when the emulator or a setting is missing."""
    if not os.environ.get("DATASTORE_EMULATOR_HOST"):
        sys.exit(
            f"DATASTORE_EMULATOR_HOST is not set: run `make run-emulator` first "
            f"(make {target} reads it from .env)"
        )
    try:
        settings = load(CommonSettings)
    except ConfigError as exc:
        sys.exit(exc.message)
    return datastore.Client(
        project=settings.google_cloud_project, namespace=settings.datastore_namespace
    )
