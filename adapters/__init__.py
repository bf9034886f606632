"""Vendor adapters: one sub-package per vendor, chosen by a backend's `kind`."""

from __future__ import annotations

from collections.abc import Callable

import adapters.modelarts.adapter
import adapters.runai.adapter  # noqa: F401  (registers the adapters)
from adapters.modelarts import translate as modelarts_translate
from adapters.runai import translate as runai_translate
from gateway.core.config import BackendConfig
from gateway.core.models import JobSpec
from gateway.core.translation import Translation

Translator = Callable[[JobSpec, BackendConfig, str], Translation]

TRANSLATORS: dict[str, Translator] = {
    "runai": runai_translate.translate,
    "modelarts": modelarts_translate.translate,
}


def translate_spec(spec: JobSpec, backend: BackendConfig, job_id: str) -> Translation:
    """Translate `spec` for `backend` with the translator of the backend's kind."""
    return TRANSLATORS[backend.kind](spec, backend, job_id)
