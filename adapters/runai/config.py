"""A Run:ai backend's own config fields."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from gateway.core.config import BackendConfig

# Run:ai's projects are numbered (projectId "1", "33") or, in newer control planes, UUIDs: letters, digits and
# dashes. "1 " or "1,2" is no project the workloads list can be filtered by, so a lost create could never be
# found again; such ids are refused before anything is sent.
PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


def project_problem(project: str) -> str | None:
    """Why a string is no Run:ai project id (None when it may be one)."""
    if PROJECT_ID.fullmatch(project):
        return None
    return f"a Run:ai project id is a number or a UUID (letters, digits, '-'), not {project!r}"


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
    request_budget: float = Field(2.0, gt=0, description="Vendor requests per second the sync may spend on "
                                  "average: a delta costs one whatever the number of live jobs.")

    @field_validator("default_project")
    @classmethod
    def _project_id(cls, v: str | None) -> str | None:
        if v is not None and (why := project_problem(v)):
            raise ValueError(why)
        return v

    def simulator_options(self) -> dict[str, Any]:
        """The client id and secret, for an in-process simulator."""
        c = self.credentials
        if c.client_id and c.client_secret:
            return {"credentials": [(c.client_id, c.client_secret.get_secret_value())]}
        return {}
