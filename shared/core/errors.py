"""One exception hierarchy: every failure is either worth retrying (transient) or not (permanent).

Transient failures come in three kinds, which the worker answers differently:
- TransientError: this row's own glitch (a 500, a timeout, a cut-off answer). The attempt is
  charged against MAX_ATTEMPTS; the worker answers 500, so only this task backs off.
- CapacityError: Dify refused before the run started (its concurrency limit, an overloaded
  proxy). Not charged; the worker answers 429/503, so Cloud Tasks slows the whole queue.
- AppWideError: every row would fail the same way (a wrong key, a disabled app, a used-up
  quota). Not charged; the worker pauses the queue until an operator fixes the cause.
PermanentError is recorded as FAILED. `outcomes.py` is the one place that maps Dify's answers
onto these classes.
"""

from __future__ import annotations

from shared.core.spend import SPEND_CODE


class BatchError(Exception):
    """Base class of every error this project raises on purpose."""

    def __init__(
        self, message: str, *, code: str = "error", workflow_run_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        # The Dify run this error came from, when one was started: stored on the row so it can
        # be found in Dify's logs.
        self.workflow_run_id = workflow_run_id

    def describe(self) -> str:
        """Short text for logs and the stored `error` property: code and message."""
        return f"{self.code}: {self.message}"


class TransientError(BatchError):
    """Worth retrying later: 5xx, timeouts, cut-off answers, contention."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "transient",
        retry_after: float | None = None,
        workflow_run_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, workflow_run_id=workflow_run_id)
        self.retry_after = retry_after


class CapacityError(TransientError):
    """Dify (or a proxy in front of it) is full and started no run: retry later, uncharged."""


class AppWideError(TransientError):
    """A failure every row would meet (key, app, quota): pause the batch, charge nothing.

    `remedy` says what the operator must fix before resuming; `bad_key` asks the client to
    read its key again before the next call (a rotated secret then needs no redeploy).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        remedy: str,
        bad_key: bool = False,
        from_text: bool = False,
    ) -> None:
        super().__init__(message, code=code)
        self.remedy = remedy
        self.bad_key = bad_key
        # Recognised only from the text of a run's error, which can echo the row's own cells:
        # it pauses the batch only once a second, different row fails the same way.
        self.from_text = from_text


class PermanentError(BatchError):
    """Retrying cannot help: bad input, a workflow that failed, an oversized answer."""


class ConfigError(PermanentError):
    """A setting is missing or invalid; the message names the environment variable."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="config_error")


class SheetError(PermanentError):
    """The sheet cannot be used as it is (no header, blank or repeated headers, bad id column)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="sheet_error")


class SpendLimitReached(AppWideError):
    """The batch has spent its tokens (MAX_TOTAL_TOKENS): pause like an app-wide failure until
    the operator raises the limit and resumes. The row is not charged an attempt."""

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            code=SPEND_CODE,
            remedy="raise MAX_TOTAL_TOKENS (or the workflow's max_total_tokens), then resume "
            "(dify-batch resume)",
        )
