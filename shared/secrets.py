"""SecretReader: reads one Secret Manager secret's latest version."""

from __future__ import annotations

import threading
from collections.abc import Callable

from google.cloud import secretmanager

from shared.errors import ConfigError


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
        return response.payload.data.decode("utf-8").strip()


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
                self._value = self._read()
            return self._value

    def forget(self) -> None:
        with self._lock:
            self._value = None

    def known(self) -> str | None:
        """The value if it was read already (for scrubbing texts), without reading it."""
        return self._value
