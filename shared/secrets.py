"""SecretReader: reads one Secret Manager secret's latest version."""

from __future__ import annotations

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
