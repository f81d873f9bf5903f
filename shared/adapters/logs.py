"""JSON log lines on stdout with a `severity` field, which Cloud Logging parses into entries.

Named logs.py, not logging.py, so it can never shadow the standard library module.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from shared.core.redact import scrub
from shared.core.text import storable

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        # Fields passed with `extra=` become top-level keys (jsonPayload fields in Cloud Logging).
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # No secret and no unencodable text may reach the log, whatever the message quotes.
        return storable(scrub(json.dumps(entry, ensure_ascii=False, default=str)))


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the time (test runners swap it)."""

    _dify_batch = True

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(level: str | None = None) -> None:
    """Route the project's loggers to one JSON line per event on stdout (idempotent); `level`
    None keeps the level already set (INFO at first)."""
    root = logging.getLogger("dify_batch")
    if level is not None or root.level == logging.NOTSET:
        root.setLevel((level or "INFO").upper())
    if not any(getattr(h, "_dify_batch", False) for h in root.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.propagate = False


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"dify_batch.{name}")
