"""Which jobs a caller may see, said once: for a row in hand, and as the SQL condition every read path adds.

A caller sees its own tenant's jobs, the external (imported) jobs of the vendor projects its config names, and
an admin sees everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, or_

from gateway.store.schema import jobs


class Viewer(Protocol):
    """Who reads (gateway.service.principal.Principal is one)."""

    @property
    def tenant(self) -> str: ...

    @property
    def admin(self) -> bool: ...

    @property
    def projects(self) -> tuple[str, ...]: ...


def sees(viewer: Viewer, row: Mapping[str, Any]) -> bool:
    """Whether `viewer` may see the job of `row` (a job row, or a transition row joined with its job)."""
    if viewer.admin or row["tenant"] == viewer.tenant:
        return True
    return bool(row["origin"] == "external" and row["project"] in viewer.projects)


def visible_to(viewer: Viewer | None) -> ColumnElement[bool] | None:
    """The same rule as a condition on the jobs table; None when nothing is hidden (no viewer, or an admin)."""
    if viewer is None or viewer.admin:
        return None
    own: ColumnElement[bool] = jobs.c.tenant == viewer.tenant
    if viewer.projects:
        own = or_(own, and_(jobs.c.origin == "external", jobs.c.project.in_(list(viewer.projects))))
    return own
