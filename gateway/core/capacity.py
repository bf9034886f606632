"""What a backend has free: GPUs by pool and type, the queue, quotas and their use, in neutral terms.

Adapters read it from the vendors' own APIs (Run:ai node pools, their metrics and projects; ModelArts
flavors); the sync loop keeps the latest per backend, and `why`, the capacity endpoint and placement read
that copy, never the vendor, on a request's path.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class PoolCapacity(BaseModel):
    """One pool of GPUs: a Run:ai node pool, a ModelArts flavor."""

    pool: str = Field(..., description="Node pool (Run:ai) or flavor (ModelArts).")
    gpu_type: str | None = Field(None, description="The GPU type it carries (mappings/gpus.yaml), when known.")
    gpus_per_node: float | None = Field(None, description="ModelArts: GPUs of one node of the flavor.")
    total_gpus: float | None = Field(None, description="GPUs in the pool; null when the vendor does not say.")
    free_gpus: float | None = Field(None, description="GPUs free now; null when the vendor does not say "
                                    "(an unlimited pool).")
    queued: int | None = Field(None, description="Workloads waiting for the pool, as the vendor counts them.")


class QuotaUse(BaseModel):
    """A project's quota in a pool and what it holds."""

    project: str
    pool: str
    deserved_gpus: float | None = Field(None, description="GPUs the project is guaranteed; null: no quota.")
    limit_gpus: float | None = Field(None, description="Most GPUs the project may hold; null: no limit.")
    used_gpus: float = 0.0
    requested_gpus: float | None = Field(None, description="Held plus asked for by waiting workloads.")


class Capacity(BaseModel):
    """A backend's capacity as last read from the vendor."""

    backend: str
    observed_at: datetime | None = Field(None, description="When the gateway read it.")
    age_seconds: float | None = Field(None, description="Seconds since then, when served.")
    pools: list[PoolCapacity] = Field(default_factory=list)
    quotas: list[QuotaUse] = Field(default_factory=list)
    queued_jobs: int | None = Field(None, description="This gateway's jobs QUEUED on the backend.")
    error: str | None = Field(None, description="Why the last read failed (the figures are older), if it did.")

    def pools_for(self, gpu_type: str | None, per_node: float | None = None) -> list[PoolCapacity]:
        """The pools a job could run in: of its GPU type (any when None) and, where a pool's nodes have a
        fixed GPU count (a ModelArts flavor), with the job's GPUs per node."""
        return [p for p in self.pools
                if (gpu_type is None or (p.gpu_type or "").lower() == gpu_type.lower())
                and (per_node is None or p.gpus_per_node is None or p.gpus_per_node == per_node)]

    def free_for(self, gpu_type: str | None, per_node: float | None = None) -> float | None:
        """The most GPUs free in one of those pools: a job runs in one pool (a node pool, a flavor), so free
        GPUs spread over several do not add up for it. None when no pool says."""
        known = [p.free_gpus for p in self.pools_for(gpu_type, per_node) if p.free_gpus is not None]
        return max(known) if known else None
