"""Reading a job spec file (YAML or JSON, '-' for stdin) for the CLI."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.core.errors import ValidationError


def read_spec_file(path: str) -> Any:
    """Read a YAML or JSON spec file ('-' is stdin)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as err:
        raise ValidationError(f"cannot read {path}: {err.strerror}") from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValidationError(f"{path} is not valid YAML or JSON: {err}") from err
