"""The placement decision, as data: every candidate backend with whether it can run the job and why, what
capacity the gateway saw there and how old it was, its price, and the one chosen and why. Stored with the
job before any vendor call, so a retry, a crash or another replica never places the same job twice."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Policy = Literal["ordered", "soonest", "cheapest"]


class Candidate(BaseModel):
    """One backend considered for a job."""

    backend: str
    feasible: bool
    why: str = Field(..., description="Why it can or cannot run the job.")
    free_gpus: float | None = Field(None, description="The most GPUs free in one pool that fits the job, as "
                                    "last read; null when the backend does not say.")
    queued: int | None = Field(None, description="Jobs waiting there for the GPUs, as last read.")
    capacity_age_seconds: float | None = Field(None, description="How old the capacity figures were.")
    price_per_hour: float | None = Field(None, description="The job's GPUs x the price per GPU-hour "
                                         "(mappings/prices.yaml); null when not priced.")


class Placement(BaseModel):
    """Where the gateway placed a job, and why."""

    policy: Policy
    candidates: list[Candidate]
    chosen: str
    why: str
    decided_at: datetime
    moves: int = Field(0, description="Times the job has moved to another candidate while waiting.")
