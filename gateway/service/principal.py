"""Who is calling: a tenant, its role, and the vendor projects whose external jobs it may see."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant and its role."""

    tenant: str
    role: str = "user"
    projects: tuple[str, ...] = ()

    @property
    def admin(self) -> bool:
        return self.role == "admin"
