"""One exception hierarchy: every failure is either worth retrying (transient) or not (permanent).

The worker maps TransientError to a retry answer (503/429) and PermanentError to a
recorded FAILED row; nothing else in the code decides retry versus fail.
"""

from __future__ import annotations


class BatchError(Exception):
    """Base class of every error this project raises on purpose."""

    def __init__(self, message: str, *, code: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def describe(self) -> str:
        """Short text for logs and the stored `error` property: code and message."""
        return f"{self.code}: {self.message}"


class TransientError(BatchError):
    """Worth retrying later: rate limits, 5xx, timeouts, cut-off answers, contention."""

    def __init__(
        self, message: str, *, code: str = "transient", retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class PermanentError(BatchError):
    """Retrying cannot help: bad input, bad key, a workflow that failed, an oversized answer."""


class ConfigError(PermanentError):
    """A setting is missing or invalid; the message names the environment variable."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="config_error")


class SheetError(PermanentError):
    """The sheet cannot be used as it is (no header, blank or repeated headers, bad id column)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="sheet_error")
