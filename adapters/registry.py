"""The vendors this gateway knows: one line per vendor folder. Importing a vendor's adapter module registers
its adapter class, and with it the vendor's backend config model, in the core's REGISTRY."""

from __future__ import annotations

import adapters.modelarts.adapter
import adapters.runai.adapter  # noqa: F401  (each import is one vendor's registry line)
from gateway.core.adapter import REGISTRY, Registry


def load() -> Registry:
    """The registry with every vendor above in it (its translate() turns a spec into a backend's request)."""
    return REGISTRY
