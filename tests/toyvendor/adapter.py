"""A third, toy vendor: everything the gateway needs of it is here, registered by the decorator below."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pydantic import SecretStr

from gateway.core.adapter import REGISTRY, Adapter, Capability, Handle, VendorJob
from gateway.core.config import BackendConfig
from gateway.core.errors import AmbiguousCreate, BackendConflict, BackendUnavailable
from gateway.core.models import JobSpec, JobStatus, Phase
from gateway.core.translation import ReportBuilder, Translation, spec_fields, vendor_name
from mappings import load_phase_table

PHASES = ("queued", "running", "done", "stopped")


class ToyConfig(BackendConfig):
    """The toy vendor's own config: a token."""

    kind: Literal["toy"] = "toy"
    token: SecretStr | None = None

    def simulator_options(self) -> dict[str, Any]:
        return {"credentials": [("toy", self.token.get_secret_value())]} if self.token else {}


@REGISTRY.register
class ToyAdapter(Adapter[ToyConfig]):
    """Toy Cloud: create, read, list, stop and delete; nothing else."""

    kind = "toy"
    config_model = ToyConfig
    simulator = "tests.toyvendor.simulator:create_simulator"
    unsupported = {c: "toy cloud has no such thing" for c in (
        Capability.SUSPEND, Capability.RESUME, Capability.LOGS, Capability.EVENTS, Capability.FRACTIONAL_GPUS,
        Capability.MULTI_NODE, Capability.METRICS, Capability.CAPACITY)}

    @classmethod
    def phase_table(cls) -> dict[str, Any]:
        return load_phase_table(Path(__file__).with_name("phases.yaml"), PHASES).as_json()

    @classmethod
    def translate_for(cls, spec: JobSpec, config: ToyConfig, job_id: str) -> Translation:
        rep = ReportBuilder(spec)
        name = vendor_name(spec.name, job_id)
        for f in spec_fields(spec):
            rep.add(f, "exact" if f in ("name", "backend", "image") else "dropped",
                    "" if f in ("name", "backend", "image") else "toy cloud runs an image, nothing more")
        return Translation("POST", "/jobs", {"name": name, "image": spec.image}, rep.finish(), name)

    async def _call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Token {self.config.token.get_secret_value()}"} if self.config.token else {}
        try:
            async with self.session.request(method, self.config.url + path, headers=headers, **kw) as r:
                return r.status, await r.json()
        except aiohttp.ClientError as err:
            raise BackendUnavailable(f"{self.name}: {err}", backend=self.name) from err

    def _job(self, rec: dict[str, Any]) -> VendorJob:
        rule = load_phase_table(Path(__file__).with_name("phases.yaml"), PHASES).phases.get(rec["state"])
        status = JobStatus(phase=Phase(rule.phase) if rule else Phase.UNKNOWN, terminal=bool(rule and rule.terminal),
                           vendor_phase=rec["state"], observed_at=datetime.now(UTC))
        return VendorJob(handle=Handle(rec["id"], rec["name"]), status=status, raw=rec)

    async def _create(self, translation: Translation) -> VendorJob:
        try:
            status, body = await self._call("POST", "/jobs", json=translation.body)
        except BackendUnavailable as err:
            raise AmbiguousCreate(err.detail, backend=self.name) from err
        if status == 409:
            raise BackendConflict("name taken", backend=self.name, vendor_status=409)
        return self._job(body)

    async def find_by_name(self, vendor_name: str, project: str | None = None,
                           kind: str | None = None) -> VendorJob | None:
        _, body = await self._call("GET", "/jobs", params={"name": vendor_name})
        return next((self._job(j) for j in body["jobs"]), None)

    async def get(self, handle: Handle) -> VendorJob | None:
        status, body = await self._call("GET", f"/jobs/{handle.backend_job_id}")
        return None if status == 404 else self._job(body)

    async def list_page(self, offset: int, limit: int, active_only: bool = False,
                        since: float | None = None) -> tuple[list[VendorJob], bool]:
        _, body = await self._call("GET", "/jobs", params={"offset": offset, "limit": limit})
        return [self._job(j) for j in body["jobs"] if since is None or j["created"] >= since], body["more"]

    async def cancel(self, handle: Handle) -> None:
        await self._call("POST", f"/jobs/{handle.backend_job_id}/stop")

    async def delete(self, handle: Handle) -> None:
        await self._call("DELETE", f"/jobs/{handle.backend_job_id}")
