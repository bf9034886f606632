"""An in-memory vendor and its adapter, for the fast tier: the submit state machine, the store and the sync
decisions are driven with no socket and no sleep, each vendor answer scripted by the test."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.core.adapter import REGISTRY, Adapter, Capability, Handle, VendorJob
from gateway.core.config import BackendConfig, Config, parse_config
from gateway.core.errors import (
    AmbiguousCreate,
    BackendConflict,
    BackendRejected,
    BackendUnavailable,
)
from gateway.core.models import JobSpec, JobStatus, Phase
from gateway.core.translation import ReportBuilder, Translation, spec_fields, vendor_name

PHASES = {"queued": (Phase.QUEUED, False), "running": (Phase.RUNNING, False), "done": (Phase.SUCCEEDED, True),
          "failed": (Phase.FAILED, True), "stopped": (Phase.CANCELLED, True),
          "suspending": (Phase.SUSPENDING, False), "suspended": (Phase.SUSPENDED, False)}

# What the next create does: "ok"; "lost" (created, but the answer never arrives); "absent" (no answer, not
# created); "reject" (a 400); "down" (not sent: unavailable).
CreateOutcome = Literal["ok", "lost", "absent", "reject", "down"]


@dataclass
class FakeVendor:
    """The vendor's side: its jobs, and what the next calls do."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    creates: list[CreateOutcome] = field(default_factory=list)  # consumed one per create; then "ok"
    lookups_down: int = 0  # this many find_by_name calls fail as unavailable
    down: bool = False  # every read fails (a sync poll raises)
    unlisted: set[str] = field(default_factory=set)  # jobs its list pages do not show (ended, say)
    gets_left: int | None = None  # this many GETs answer, the next ones fail as unavailable
    calls: list[str] = field(default_factory=list)
    lag: bool = False  # actions (cancel, suspend, resume, scale) take effect at the next tick(), not at once
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _intents: list[tuple[str, str, Any]] = field(default_factory=list)

    def act(self, job_id: str, what: str, value: Any = None) -> None:
        """An action the vendor accepted: applied now, or at the next tick() when it lags."""
        if self.lag:
            self._intents.append((job_id, what, value))
        else:
            self._apply(job_id, what, value)

    def tick(self) -> None:
        """The vendor catches up with the actions it accepted."""
        intents, self._intents = self._intents, []
        for job_id, what, value in intents:
            self._apply(job_id, what, value)

    def _apply(self, job_id: str, what: str, value: Any) -> None:
        rec = self.jobs.get(job_id)
        if rec is None or PHASES[rec["phase"]][1]:
            return
        if what == "replicas":
            rec["replicas"] = value
        elif what == "suspended" and rec["phase"] not in ("queued", "running"):
            return
        elif what == "queued" and rec["phase"] not in ("suspending", "suspended"):
            return
        else:
            rec["phase"] = what

    def add(self, name: str, phase: str = "queued") -> dict[str, Any]:
        job = {"id": f"v{next(self._ids)}", "name": name, "phase": phase}
        self.jobs[job["id"]] = job
        return job

    def named(self, name: str) -> list[dict[str, Any]]:
        return [j for j in self.jobs.values() if j["name"] == name]


VENDORS: dict[str, FakeVendor] = {}


class FakeConfig(BackendConfig):
    """A fake backend: `vendor` names its FakeVendor in VENDORS."""

    kind: Literal["fake"] = "fake"
    vendor: str = "default"


@REGISTRY.register
class FakeAdapter(Adapter[FakeConfig]):
    """The adapter over a FakeVendor."""

    kind = "fake"
    config_model = FakeConfig
    unsupported = {Capability.LOGS: "a fake has no logs"}
    unsupported_inference = {Capability.LOGS: "a fake has no logs"}

    @property
    def vendor(self) -> FakeVendor:
        return VENDORS.setdefault(self.config.vendor, FakeVendor())

    @classmethod
    def translate_for(cls, spec: JobSpec, config: FakeConfig, job_id: str) -> Translation:
        rep = ReportBuilder(spec)
        for f in spec_fields(spec):
            rep.add(f, "exact")
        name = vendor_name(spec.name, job_id)
        return Translation("POST", "/jobs", {"name": name, "kind": spec.kind}, rep.finish(), name, kind=spec.kind)

    def _job(self, rec: dict[str, Any]) -> VendorJob:
        phase, terminal = PHASES[rec["phase"]]
        return VendorJob(Handle(rec["id"], rec["name"], rec.get("kind", "training")), JobStatus(
            phase=phase, terminal=terminal, vendor_phase=rec["phase"], observed_at=datetime.now(UTC),
            desired_replicas=rec.get("replicas"), reason=rec.get("reason"), exit_code=rec.get("exit_code")))

    def _read(self, what: str) -> None:
        self.vendor.calls.append(what)
        if self.vendor.down:
            raise BackendUnavailable(f"{self.name}: down", backend=self.name)

    async def _create(self, translation: Translation) -> VendorJob:
        v = self.vendor
        v.calls.append("create")
        outcome = v.creates.pop(0) if v.creates else "ok"
        if outcome == "down":
            raise BackendUnavailable(f"{self.name}: not sent", backend=self.name)
        if outcome == "reject":
            raise BackendRejected(f"{self.name}: image not allowed", backend=self.name, vendor_status=400)
        name = translation.vendor_name
        if v.named(name):
            raise BackendConflict(f"{self.name}: {name} exists", backend=self.name, vendor_status=409)
        if outcome == "absent":
            raise AmbiguousCreate(f"{self.name}: timed out", backend=self.name)
        rec = v.add(name)
        if translation.kind == "inference":
            rec.update(kind="inference", replicas=1)
        if outcome == "lost":
            raise AmbiguousCreate(f"{self.name}: answer lost", backend=self.name)
        return self._job(rec)

    async def find_by_name(self, vendor_name: str, project: str | None = None,
                           kind: str | None = None) -> VendorJob | None:
        v = self.vendor
        v.calls.append("lookup")
        if v.lookups_down > 0:
            v.lookups_down -= 1
            raise BackendUnavailable(f"{self.name}: lookup failed", backend=self.name)
        return next((self._job(j) for j in v.named(vendor_name)), None)

    async def get(self, handle: Handle) -> VendorJob | None:
        self._read("get")
        if self.vendor.gets_left is not None:
            if self.vendor.gets_left <= 0:
                raise BackendUnavailable(f"{self.name}: GET failed", backend=self.name)
            self.vendor.gets_left -= 1
        rec = self.vendor.jobs.get(handle.backend_job_id)
        return None if rec is None else self._job(rec)

    async def list_page(self, offset: int, limit: int, active_only: bool = False,
                        since: float | None = None) -> tuple[list[VendorJob], bool]:
        self._read("list")
        rows = [r for r in self.vendor.jobs.values() if r["id"] not in self.vendor.unlisted]
        return [self._job(r) for r in rows[offset:offset + limit]], offset + limit < len(rows)

    async def cancel(self, handle: Handle) -> None:
        self.vendor.calls.append("cancel")
        self.vendor.act(handle.backend_job_id, "stopped")

    async def suspend(self, handle: Handle) -> None:
        self.vendor.calls.append("suspend")
        self.vendor.act(handle.backend_job_id, "suspended")

    async def resume(self, handle: Handle) -> None:
        self.vendor.calls.append("resume")
        self.vendor.act(handle.backend_job_id, "queued")

    async def scale(self, handle: Handle, replicas: int) -> None:
        self.vendor.calls.append("scale")
        self.vendor.act(handle.backend_job_id, "replicas", replicas)

    async def delete(self, handle: Handle) -> None:
        self.vendor.calls.append("delete")
        self.vendor.jobs.pop(handle.backend_job_id, None)


def fake_config(store_url: str, vendor: str, **server: Any) -> Config:
    """A config with one fake backend `fake` over VENDORS[vendor] (made fresh) and tenants alpha and beta."""
    VENDORS[vendor] = FakeVendor()
    return parse_config({
        "store": {"url": store_url}, "server": {"submit_wait_seconds": 5, **server},
        "tenants": [{"name": "alpha", "api_keys": ["alpha-key-123"]}, {"name": "beta", "api_keys": ["beta-key-456"]}],
        "backends": [{"name": "fake", "kind": "fake", "url": "http://fake.invalid", "vendor": vendor,
                      "submit_deadline": 5}]})
