"""A local STAND-IN of Secret Manager's AccessSecretVersion over gRPC (tests and demos only).

Point SECRET_MANAGER_EMULATOR_HOST at `host` and the real google-cloud-secret-manager
client reads the secrets given here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud.secretmanager_v1.types import (
    AccessSecretVersionRequest,
    AccessSecretVersionResponse,
    SecretPayload,
)

from local.grpc_standin import serve


@dataclass
class SecretManagerStandIn:
    """`secrets` maps a secret id (the short name) to its value."""

    secrets: dict[str, str] = field(default_factory=dict)
    accessed: list[str] = field(default_factory=list)
    _server: grpc.Server | None = None
    port: int = 0

    def start(self) -> SecretManagerStandIn:
        self._server, self.port = serve(
            "google.cloud.secretmanager.v1.SecretManagerService",
            {
                "AccessSecretVersion": (
                    self._access,
                    AccessSecretVersionRequest,
                    AccessSecretVersionResponse,
                )
            },
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _access(self, request: AccessSecretVersionRequest, context: Any) -> Any:
        self.accessed.append(request.name)
        parts = request.name.split("/")  # projects/P/secrets/S/versions/V
        secret = parts[3] if len(parts) == 6 and parts[2] == "secrets" else None
        if secret not in self.secrets:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Secret [{request.name}] not found")
        return AccessSecretVersionResponse(
            name=request.name, payload=SecretPayload(data=self.secrets[str(secret)].encode())
        )
