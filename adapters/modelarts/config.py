"""A ModelArts backend's own config fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from gateway.core.config import BackendConfig, SimulatorSettings
from mappings import flavor_by_id


class ModelArtsCredentials(BaseModel):
    """AK/SK (with a security token for temporary credentials), or an IAM token."""

    model_config = ConfigDict(extra="forbid")

    ak: str | None = None
    sk: SecretStr | None = None
    security_token: SecretStr | None = None
    iam_token: SecretStr | None = None


class ModelArtsConfig(BackendConfig):
    """A ModelArts region and project."""

    kind: Literal["modelarts"] = "modelarts"
    project_id: str | None = None
    pool_id: str | None = None
    default_project: str | None = None
    credentials: ModelArtsCredentials = ModelArtsCredentials()
    metrics_sample_seconds: float = Field(60.0, gt=0, description="The seconds each job-metrics value averages "
                                          "(60 on the vendor; a simulator may sample faster).")

    @field_validator("simulator")
    @classmethod
    def _flavors(cls, v: SimulatorSettings) -> SimulatorSettings:
        if v.quota:
            raise ValueError("quota: the ModelArts simulator has no projects with quotas (gpus: per flavor only)")
        unknown = [f for f in v.gpus if flavor_by_id(f) is None]
        if unknown:
            raise ValueError(f"gpus: unknown flavors {', '.join(unknown)} (see mappings/flavors.yaml)")
        return v

    def simulator_options(self) -> dict[str, Any]:
        """The AK/SK pair and the metrics sample length, for an in-process simulator."""
        c = self.credentials
        out: dict[str, Any] = {"sample_seconds": self.metrics_sample_seconds}
        if c.ak and c.sk:
            out["credentials"] = [(c.ak, c.sk.get_secret_value())]
        return out
