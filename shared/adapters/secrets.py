"""SecretReader: reads one Secret Manager secret's latest version."""

from __future__ import annotations

import threading
from collections.abc import Callable

from google.cloud import secretmanager

from shared.core.errors import ConfigError
from shared.core.redact import scrub


class SecretReader:
    def __init__(self, *, client: secretmanager.SecretManagerServiceClient, project: str) -> None:
        self._client = client
        self._project = project

    def read(self, secret_id: str, *, setting: str) -> str:
        """`secret_id` is a short id (this project, latest version) or a full resource name."""
        name = secret_id
        if not secret_id.startswith("projects/"):
            name = f"projects/{self._project}/secrets/{secret_id}/versions/latest"
        elif "/versions/" not in secret_id:
            name = f"{secret_id}/versions/latest"
        try:
            response = self._client.access_secret_version(request={"name": name})
        except Exception as exc:
            raise ConfigError(
                f"cannot read the secret {name} named by {setting}: {type(exc).__name__}: "
                f"{getattr(exc, 'message', exc)}. Check the id and that this function's service "
                "account has roles/secretmanager.secretAccessor on it."
            ) from None
        try:
            return response.payload.data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError(
                f"the secret {name} named by {setting} is not UTF-8 text; store the value as "
                "plain text"
            ) from None


def key_problem(value: str) -> str | None:
    """Why `value` cannot be sent as a key in an HTTP header, or None. Never quotes it: an
    HTTP library refusing such a header would put the whole value in its error message."""
    if not value:
        return "is empty"
    if any(not (33 <= ord(c) <= 126) for c in value):
        return (
            "holds a space, a line break or another character that is not printable ASCII (a "
            "stray \\r or newline from pasting?); store the key on one line, exactly as Dify "
            "shows it"
        )
    return None


def looks_like_a_key(secret_id: str) -> bool:
    """Dify app keys start with `app-`: such a value in a *secret id* setting is a key pasted in
    the wrong place, which would end up in Terraform state and in error messages."""
    return secret_id.strip().lower().startswith("app-")


def checked_key(value: str, *, source: str) -> str:
    """The key without surrounding whitespace, or ConfigError naming `source` (not the key)."""
    value = value.strip()
    problem = key_problem(value)
    if problem:
        raise ConfigError(f"the Dify API key in {source} {problem}")
    return value


class ApiKey:
    """A key read on first use, and read again after forget(): Dify answering 401 means the
    secret may have been rotated, and the next call should use the new value."""

    def __init__(self, *, read: Callable[[], str]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._value: str | None = None

    def get(self) -> str:
        with self._lock:
            if self._value is None:
                value = self._read()
                scrub.add(value)
                self._value = value
            return self._value

    def forget(self) -> None:
        with self._lock:
            self._value = None
