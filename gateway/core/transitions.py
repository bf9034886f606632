"""Which neutral phase may follow which, as data: the store records no other step.

Two kinds of edge. `ANY`: the vendor may report it (the sync, a submit's confirmation) and the gateway may
make it. `ACTION`: only a gateway action makes it (a resume of a job still suspending); the same step seen
in a vendor's list would be an old answer read after the action. A phase never moves back from CANCELLING
or out of a terminal phase, whoever says so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from gateway.core.models import JobStatus, Phase

Who = Literal["any", "action"]
ANY: Who = "any"
ACTION: Who = "action"

Q, ST, R = Phase.QUEUED, Phase.STARTING, Phase.RUNNING
SG, SD = Phase.SUSPENDING, Phase.SUSPENDED
OK, KO, CG, CD, UN = Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLING, Phase.CANCELLED, Phase.UNKNOWN

_ENDS: dict[Phase, Who] = {OK: ANY, KO: ANY, CD: ANY}
_LIVE: dict[Phase, Who] = {Q: ANY, ST: ANY, R: ANY, SG: ANY, SD: ANY, CG: ANY, UN: ANY, **_ENDS}

EDGES: Mapping[Phase, Mapping[Phase, Who]] = {
    # Waiting and running move freely among themselves: a preempted job is pending again, a restarted
    # one starting again (both vendors report these).
    Q: _LIVE,
    ST: _LIVE,
    R: _LIVE,
    # Suspending ends suspended, or in an end; back to running or waiting only by a resume.
    SG: {SD: ANY, CG: ANY, UN: ANY, Q: ACTION, **_ENDS},
    SD: {Q: ANY, ST: ANY, R: ANY, CG: ANY, UN: ANY, **_ENDS},
    # A cancel only ever ends.
    CG: {UN: ANY, **_ENDS},
    # Unknown (the tables did not know the vendor's word) may become anything.
    UN: _LIVE,
    OK: {}, KO: {}, CD: {},
}

# Status keys the idle watch writes, kept when a vendor's status is stored over them.
ACTIVITY_KEYS = ("idle", "idle_since", "gpu_utilization", "gpu_utilization_points", "activity_checked_at")
# Status fields the gateway keeps itself; every other field is the vendor's, and a change in any of them
# is a change worth storing and announcing.
GATEWAY_OWNED = frozenset({"observed_at", "stale", "attempt", "retry_outcome", *ACTIVITY_KEYS})


def allowed(old: str, new: str, action: bool) -> bool:
    """Whether a job in phase `old` may be recorded in phase `new` (`action`: a gateway action says so)."""
    if old == new:
        return True
    who = EDGES.get(Phase(old), {}).get(Phase(new))
    return who == ANY or (who == ACTION and action)


# The vendor-owned fields, in a fixed order (every JobStatus field the gateway does not keep itself).
VENDOR_FIELDS = tuple(f for f in JobStatus.model_fields if f not in GATEWAY_OWNED)


def digest(status: Mapping[str, Any] | JobStatus) -> str:
    """A short fingerprint of what the vendor said (every vendor-owned field) and of the stale flag: equal
    digests, nothing to write. Stored beside each status, so the sync compares 10,000 live jobs without
    decoding (or keeping) a status object for each."""
    get = status.get if isinstance(status, Mapping) else status.__dict__.get
    values = [get(f) for f in VENDOR_FIELDS] + [bool(get("stale"))]
    return hashlib.blake2b(json.dumps(values, default=str).encode(), digest_size=12).hexdigest()


def vendor_view(status: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a stored status the vendor reports, without empty fields (what a change event lists)."""
    return {k: v for k, v in status.items() if k not in GATEWAY_OWNED and v is not None}
