"""Reading a job spec file (YAML or JSON, '-' for stdin) for the CLI."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.core.errors import ValidationError


def read_spec_file(path: str) -> Any:
    """Read a YAML or JSON spec file ('-' is stdin); a YAML error names its line and column."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as err:
        raise ValidationError(f"cannot read {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ValidationError(f"cannot read {path}: not UTF-8 text ({err.reason})") from err
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        raise ValidationError(f"{where}: not valid YAML or JSON: {err.problem or err.context}") from err
    except yaml.YAMLError as err:
        raise ValidationError(f"{path}: not valid YAML or JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValidationError(f"{path}: a job spec is a mapping of fields (name, backend, image, ...), "
                              f"not {type(data).__name__ if data is not None else 'an empty document'}")
    return data
