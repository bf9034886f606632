"""A Run:ai backend's own config fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gateway.core.config import BackendConfig


class RunaiCredentials(BaseModel):
    """An application's client id and secret (POST /api/v1/token)."""

    model_config = ConfigDict(extra="forbid")

    client_id: str | None = None
    client_secret: SecretStr | None = None


class RunaiConfig(BackendConfig):
    """A Run:ai control plane."""

    kind: Literal["runai"] = "runai"
    cluster_id: str | None = None
    default_project: str | None = None
    obs_endpoint: str = Field("https://obs.cn-north-4.myhuaweicloud.com", description="The S3-compatible "
                              "endpoint through which an obs:// input or output is mounted.")
    credentials: RunaiCredentials = RunaiCredentials()

    def simulator_options(self) -> dict[str, Any]:
        """The client id and secret, for an in-process simulator."""
        c = self.credentials
        if c.client_id and c.client_secret:
            return {"credentials": [(c.client_id, c.client_secret.get_secret_value())]}
        return {}
