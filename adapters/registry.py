"""The vendors this gateway knows: one line per vendor folder. Importing a vendor's adapter module registers
its adapter class, and with it the vendor's backend config model, in the core's REGISTRY."""

from __future__ import annotations

import adapters.modelarts.adapter
import adapters.runai.adapter  # noqa: F401  (each import is one vendor's registry line)
from gateway.core.adapter import REGISTRY, Registry
from gateway.core.config import BackendConfig
from gateway.core.models import JobSpec
from gateway.core.translation import Translation


def load() -> Registry:
    """The registry with every vendor above in it."""
    return REGISTRY


def translate_spec(spec: JobSpec, backend: BackendConfig, job_id: str) -> Translation:
    """Translate `spec` for `backend` with the translator of the backend's kind."""
    return REGISTRY.translate(spec, backend, job_id)
